#pragma once

// dinamod's event loop: one Boost.Asio io_context on one thread owns the signals, the timers,
// the HTTP endpoint and the ZeroMQ sockets (watched through their ZMQ_FD, see README.md), and
// drives the Monitor with what arrives on the bus.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>  // before Asio: Boost 1.74 misses it under C++20
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <zmq.hpp>

#include "config.h"
#include "http_server.h"
#include "metrics.h"
#include "monitor.h"
#include "snapshot_store.h"
#include "training_pool.h"
#if DINAMO_HAVE_TORCH
#include "transformer_training.h"
#endif

namespace dinamo::daemon {

// Failures that stop the start (a port in use, a state directory that cannot be created).
class StartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A ZeroMQ socket whose ZMQ_FD is watched by the loop. ZMQ_FD is edge-triggered: after every
// wake-up the owner drains the socket until ZMQ_EVENTS says nothing is left, then waits again.
class WatchedSocket {
 public:
  WatchedSocket(boost::asio::io_context& io, zmq::context_t& ctx, zmq::socket_type type);
  ~WatchedSocket();

  zmq::socket_t& socket() { return socket_; }
  bool Readable();
  // Calls `on_ready` once the socket may be readable (at once when it already is).
  void Wait(std::function<void()> on_ready);
  void Close();

 private:
  boost::asio::io_context& io_;
  zmq::socket_t socket_;
  boost::asio::posix::stream_descriptor fd_;
  bool waiting_ = false;
};

class Daemon {
 public:
  // Binds and connects everything and restores the last snapshot. Throws StartError.
  explicit Daemon(Config config);
  ~Daemon();

  // Runs until SIGTERM or SIGINT; returns the process exit code.
  int Run();

 private:
  using Clock = std::chrono::steady_clock;

  void SetUpInput();
  void SetUpZap();
  void SetUpOutput();
  void SetUpControl();
  void SetUpHttp();
  void SetUpTraining();
  void Restore();

  void WaitInput();
  void DrainInput();
  void HandleMessage(Clock::time_point received);
  void LogRejection(const Rejection& rejection);
  void FlushSuppressed(bool force);

  void WaitMonitor();
  void DrainMonitor();
  void CheckDropped();

  void WaitControl();
  void DrainControl();
  v1::Reply Answer(const std::string& request);
  v1::DaemonStatus Status() const;

  void WaitZap();
  void DrainZap();

  void Publish(const std::string& topic, const google::protobuf::MessageLite& body);
  // prefix + histogram in a buffer kept for the next message.
  const std::string& Topic(std::string_view prefix, const std::string& histogram);
  void PublishResult(MonitorResult& result, Clock::time_point received);
  void PublishAlarm(v1::Alarm& alarm);
  void PublishSummary(v1::RunSummary& summary);
  // Shelving that expires and run summaries that are due, once a second.
  void ArmHousekeeping();
  void Housekeeping();
  void ArmHeartbeat();
  void Heartbeat();
  void ArmSnapshot();
  bool WriteSnapshot(const char* why);

  void WaitSignals();
  void Reload();
  void ApplyEndpoints(const Config& old_config, const Config& new_config);
  void Stop(int signal_number);

  HttpResponse Http(std::string_view target);
  std::string StatusJson() const;

  boost::asio::io_context io_;
  zmq::context_t zmq_;
  std::shared_ptr<const Config> config_;
  SettingsResolver settings_;
  Monitor monitor_;
  Metrics metrics_;
  SnapshotStore store_;

  std::unique_ptr<WatchedSocket> zap_;
  std::unique_ptr<WatchedSocket> input_;
  std::unique_ptr<WatchedSocket> input_monitor_;
  std::unique_ptr<WatchedSocket> control_;
  zmq::socket_t output_;
  std::string output_endpoint_;
  std::string control_endpoint_;
  std::vector<std::string> connected_;
  std::vector<std::string> bound_;
  std::vector<std::string> subscribed_;
  // Binary 32-byte client keys by ZAP domain (kControlDomain, kOutputDomain in daemon.cc).
  std::map<std::string, std::vector<std::string>, std::less<>> zap_allowed_;
  std::unique_ptr<HttpServer> http_;
  std::string http_listening_;

  boost::asio::signal_set signals_;
  boost::asio::steady_timer heartbeat_timer_;
  boost::asio::steady_timer snapshot_timer_;
  boost::asio::steady_timer housekeeping_timer_;
  boost::asio::steady_timer drop_timer_;
  std::map<std::string, Clock::time_point> disconnected_;  // connect endpoints awaiting a retry

  struct Suppressed {
    Clock::time_point last_logged{};
    std::uint64_t count = 0;
  };
  std::map<std::string, Suppressed, std::less<>> suppressed_;
  Clock::time_point last_zap_log_{};

  std::vector<zmq::message_t> frames_;
  std::vector<std::string_view> frame_views_;
  std::string buffer_;
  std::string topic_;
  std::uint64_t sequence_ = 0;
  Clock::time_point started_ = Clock::now();
  std::int64_t config_loaded_unix_ns_ = 0;
  std::string last_snapshot_file_;
  std::int64_t last_snapshot_unix_ns_ = 0;
  bool stopping_ = false;
  int exit_code_ = 0;

  // Background training (method transformer); last members: the workers stop and join before
  // anything they post to is destroyed.
  std::unique_ptr<TrainingPool> training_pool_;
#if DINAMO_HAVE_TORCH
  std::unique_ptr<TransformerTrainer> trainer_;
#endif
};

// The version printed in logs, heartbeats and /status.
const char* Version();

}  // namespace dinamo::daemon
