#include "prometheus_text.hpp"

#include <cstdio>

namespace agent_mesh {

void PrometheusText::family(std::string_view name, std::string_view type, std::string_view help) {
  for (const std::string_view kind : {std::string_view("# HELP "), std::string_view("# TYPE ")}) {
    out_ += kind;
    out_ += prefix_;
    out_ += name;
    out_ += ' ';
    out_ += kind == "# HELP " ? help : type;
    out_ += '\n';
  }
}

void PrometheusText::sample(std::string_view name, std::string_view labels, double value) {
  char number[64];
  std::snprintf(number, sizeof number, "%.17g", value);
  out_ += prefix_;
  out_ += name;
  out_ += labels;
  out_ += ' ';
  out_ += number;
  out_ += '\n';
}

void PrometheusText::histogram(std::string_view name, std::span<const double> bounds,
                               std::span<const std::uint64_t> counts, double sum, std::uint64_t count) {
  const std::string base(name);
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    char le[32] = "+Inf";
    if (i < bounds.size()) std::snprintf(le, sizeof le, "%g", bounds[i]);
    sample(base + "_bucket", std::string("{le=\"") + le + "\"}", static_cast<double>(cumulative));
  }
  sample(base + "_sum", "", sum);
  sample(base + "_count", "", static_cast<double>(count));
}

}  // namespace agent_mesh
