// Google Benchmark reporter that, after the usual table, prints each benchmark's time as a ratio
// against a baseline measured in the same run: a benchmark named "X/ours" is compared with
// "X/baseline". Ratios, unlike absolute times, survive a change of machine.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace agent_mesh::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& run : runs) {
      if (run.run_type != Run::RT_Iteration || run.error_occurred) continue;
      const std::string name = run.benchmark_name();
      const auto slash = name.rfind('/');
      if (slash == std::string::npos) continue;
      times_[name.substr(0, slash)][name.substr(slash + 1)] = run.GetAdjustedCPUTime();
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n%-40s %14s %14s %8s\n", "comparison", "ours (ns)", "baseline (ns)", "ratio");
    for (const auto& [group, entries] : times_) {
      const auto ours = entries.find("ours");
      const auto base = entries.find("baseline");
      if (ours == entries.end() || base == entries.end()) continue;
      std::printf("%-40s %14.1f %14.1f %7.2fx\n", group.c_str(), ours->second, base->second,
                  ours->second / base->second);
    }
  }

 private:
  std::map<std::string, std::map<std::string, double>> times_;
};

}  // namespace agent_mesh::bench

#define AGENT_MESH_BENCH_MAIN()                                  \
  int main(int argc, char** argv) {                              \
    benchmark::Initialize(&argc, argv);                          \
    agent_mesh::bench::RatioReporter reporter;                   \
    benchmark::RunSpecifiedBenchmarks(&reporter);                \
    benchmark::Shutdown();                                       \
    return 0;                                                    \
  }
