#include "echo_agent.hpp"

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "relay/relay_server.hpp"

namespace agent_mesh::demo {

struct EchoAgent::Impl {
  std::string name;
  std::filesystem::path data_dir;
  std::unique_ptr<relay::RelayServer> server;
  std::thread runner;
  std::atomic<int> seen{0};
  // Delayed answers ("sleep_ms") wait here, so the server threads never block.
  std::mutex mutex;
  std::condition_variable stop_delays;
  bool stopping = false;
  std::vector<std::thread> delayed;

  http::Response answer(const http::Request& request) {
    ++seen;
    boost::system::error_code ec;
    boost::json::value body = boost::json::parse(request.body, ec);
    if (ec) {
      return http::Response::json(400, R"({"error":{"code":"bad_request","message":"the body is not JSON"}})");
    }
    const auto* object = body.if_object();
    const bool wants_stream = request.field("Accept").find("text/event-stream") != std::string_view::npos;
    if (object != nullptr && wants_stream && object->contains("stream") && (*object).at("stream").is_int64()) {
      const auto n = std::clamp<std::int64_t>((*object).at("stream").as_int64(), 0, 100);
      std::string events;
      for (std::int64_t i = 0; i < n; ++i) {
        events += "data: " + boost::json::serialize(boost::json::object{{"seq", i}, {"agent", name}}) + "\n\n";
      }
      http::Response response{200, {}, std::move(events)};
      response.set("Content-Type", "text/event-stream");
      return response;
    }
    return http::Response::json(200, boost::json::serialize(boost::json::object{{"agent", name}, {"echo", body}}));
  }
};

Result<std::unique_ptr<EchoAgent>> EchoAgent::start(std::string name) {
  auto agent = std::unique_ptr<EchoAgent>(new EchoAgent());
  agent->impl_ = std::make_unique<Impl>();
  Impl& impl = *agent->impl_;
  impl.name = std::move(name);
  impl.data_dir = std::filesystem::temp_directory_path() /
                  ("mesh-demo-echo-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
  relay::RelayConfig config;
  config.listen.host = "127.0.0.1";
  config.listen.port = 0;
  // The HTTP front's per-IP connection limit protects a public relay; meshd opens a connection per
  // forwarded request from 127.0.0.1, so a local agent must not throttle it.
  config.ip_connect_rate = 1e9;
  config.data_dir = impl.data_dir;
  impl.server = std::make_unique<relay::RelayServer>(config);
  impl.server->disable_relay();
  Impl* raw = &impl;
  impl.server->set_http_handler([raw](http::Request request, http::Responder respond) {
    boost::system::error_code ec;
    const auto body = boost::json::parse(request.body, ec);
    const auto* object = ec ? nullptr : body.if_object();
    if (object != nullptr && object->contains("sleep_ms") && object->at("sleep_ms").is_int64()) {
      const auto delay = std::chrono::milliseconds(std::clamp<std::int64_t>(object->at("sleep_ms").as_int64(), 0, 60000));
      std::lock_guard lock(raw->mutex);
      // Bounded: past 64 delayed answers over the agent's life, answer at once.
      if (raw->delayed.size() >= 64) {
        respond(raw->answer(request));
        return;
      }
      raw->delayed.emplace_back([raw, delay, request = std::move(request), respond = std::move(respond)] {
        std::unique_lock wait(raw->mutex);
        raw->stop_delays.wait_for(wait, delay, [raw] { return raw->stopping; });
        wait.unlock();
        respond(raw->answer(request));
      });
      return;
    }
    respond(raw->answer(request));
  });
  if (auto started = impl.server->start(); !started) return started.error();
  impl.runner = std::thread([raw] { raw->server->run(1); });
  return agent;
}

EchoAgent::~EchoAgent() {
  if (!impl_) return;
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->stop_delays.notify_all();
  for (auto& thread : impl_->delayed) thread.join();
  impl_->server->drain();
  if (impl_->runner.joinable()) impl_->runner.join();
  std::error_code ignored;
  std::filesystem::remove_all(impl_->data_dir, ignored);
}

std::string EchoAgent::url() const { return impl_->server->listening_url() + "/"; }

int EchoAgent::requests_seen() const { return impl_->seen.load(); }

}  // namespace agent_mesh::demo
