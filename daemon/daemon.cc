#include "daemon.h"

#include <csignal>
#include <filesystem>
#include <set>

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>
#include <zmq_addon.hpp>

#include "systemd_notify.h"
#include <nlohmann/json.hpp>

namespace dinamo::daemon {
namespace {

namespace asio = boost::asio;

// Messages taken off the input socket per wake-up before timers, HTTP and control get a turn.
constexpr int kInputBatch = 256;
// libzmq drops a connection on a frame over ZMQ_MAXMSGSIZE (and a connecting socket does not
// retry), so the transport limit sits above input.max_message_bytes: messages in between are
// received, refused and counted; larger ones are caught by the socket monitor.
constexpr std::size_t kTransportLimitFactor = 4;
// How long after a disconnection the monitor must report a retry before we call it a drop.
constexpr auto kRetryGrace = std::chrono::milliseconds(300);
constexpr auto kLogEvery = std::chrono::seconds(1);
constexpr int kOutputLingerMs = 1000;
constexpr const char* kMonitorEndpoint = "inproc://dinamod.input.monitor";
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr const char* kControlDomain = "dinamo";
constexpr const char* kOutputDomain = "dinamo.output";

std::int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::chrono::milliseconds Millis(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
}

// A name from the wire as it may appear in a log line: printable, bounded.
std::string Printable(std::string_view text) {
  constexpr std::size_t kMax = 200;
  std::string out;
  for (char c : text.substr(0, kMax)) {
    out.push_back(c >= 0x20 && c != 0x7f && c != '"' ? c : '?');
  }
  if (text.size() > kMax) {
    out += "...";
  }
  return out;
}

std::set<std::string> AsSet(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

}  // namespace

const char* Version() { return "0.1.0"; }

// ---------------------------------------------------------------------------------------------
// WatchedSocket

WatchedSocket::WatchedSocket(asio::io_context& io, zmq::context_t& ctx, zmq::socket_type type)
    : io_(io), socket_(ctx, type), fd_(io, socket_.get(zmq::sockopt::fd)) {}

WatchedSocket::~WatchedSocket() { Close(); }

bool WatchedSocket::Readable() {
  return socket_.handle() != nullptr && (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
}

void WatchedSocket::Wait(std::function<void()> on_ready) {
  if (socket_.handle() == nullptr || waiting_) {
    return;
  }
  waiting_ = true;
  if (Readable()) {
    asio::post(io_, [this, on_ready = std::move(on_ready)] {
      waiting_ = false;
      on_ready();
    });
    return;
  }
  fd_.async_wait(asio::posix::stream_descriptor::wait_read,
                 [this, on_ready = std::move(on_ready)](const boost::system::error_code& ec) {
                   waiting_ = false;
                   if (!ec) {
                     on_ready();
                   }
                 });
}

void WatchedSocket::Close() {
  if (socket_.handle() == nullptr) {
    return;
  }
  boost::system::error_code ignored;
  fd_.cancel(ignored);
  fd_.release();  // the descriptor belongs to libzmq
  socket_.close();
}

// ---------------------------------------------------------------------------------------------
// Start-up

Daemon::Daemon(Config config)
    : zmq_(1),
      config_(std::make_shared<const Config>(std::move(config))),
      settings_(config_),
      monitor_(settings_),
      store_(config_->state_directory),
      signals_(io_, SIGHUP, SIGTERM, SIGINT),
      heartbeat_timer_(io_),
      snapshot_timer_(io_),
      housekeeping_timer_(io_),
      drop_timer_(io_) {
  config_loaded_unix_ns_ = NowUnixNs();
  for (std::string_view reason : RejectionReasons()) {
    metrics_.rejected.emplace(std::string(reason), 0);
  }
  SetUpTraining();
  std::error_code ec;
  std::filesystem::create_directories(config_->state_directory, ec);
  if (ec) {
    throw StartError("state.directory " + config_->state_directory + ": " + ec.message());
  }
  Restore();
  try {
    SetUpZap();
    SetUpOutput();
    SetUpControl();
    SetUpInput();
  } catch (const zmq::error_t& e) {
    throw StartError(std::string("bus: ") + e.what());
  }
  SetUpHttp();
}

Daemon::~Daemon() {
  input_monitor_.reset();
  input_.reset();
  control_.reset();
  zap_.reset();
  if (output_.handle() != nullptr) {
    output_.close();
  }
}

void Daemon::SetUpTraining() {
#if DINAMO_HAVE_TORCH
  const TrainingConfig& t = config_->training;
  RegisterTransformerMethod(t);
  training_pool_ =
      std::make_unique<TrainingPool>(io_, TrainingPoolOptions{t.workers, t.queue_size});
  trainer_ = std::make_unique<TransformerTrainer>(*training_pool_, t);
  RegisterTransformerPersistence(t, trainer_.get());
  monitor_.set_learned_hook([this](const std::string& histogram, TemplateModel& model) {
    trainer_->OnLearned(histogram, model);
  });
  spdlog::info("training workers={} queue_size={} threads_per_worker={} max_steps={}", t.workers,
               t.queue_size, t.threads_per_worker, t.max_steps);
#endif
}

void Daemon::Restore() {
  int problems = 0;
  auto loaded = store_.Load(problems, [this](const v1::Snapshot& snapshot) {
    return monitor_.RestoreFrom(snapshot);  // all or nothing: a refusal changes no state
  });
  if (!loaded) {
    if (problems > 0) {
      spdlog::error("no valid snapshot in directory={}: starting with no templates",
                    config_->state_directory);
    } else {
      spdlog::info("no snapshot in directory={}: starting with no templates",
                   config_->state_directory);
    }
    return;
  }
  sequence_ = loaded->snapshot->last_sequence();
  spdlog::info("snapshot restored file={} templates={} last_sequence={}", loaded->file,
               monitor_.templates(), sequence_);
}

void Daemon::SetUpZap() {
  if (!config_->control_curve && !config_->output_curve) {
    return;
  }
  // The ZAP handler must be in place before the first client handshakes.
  zap_ = std::make_unique<WatchedSocket>(io_, zmq_, zmq::socket_type::rep);
  zap_->socket().bind(kZapEndpoint);
  const auto allow = [this](const char* domain, const CurveConfig& curve) {
    for (const std::string& key : curve.allowed_clients) {
      std::string binary(32, '\0');
      zmq_z85_decode(reinterpret_cast<std::uint8_t*>(binary.data()), key.c_str());
      zap_allowed_[domain].push_back(binary);
    }
  };
  if (config_->control_curve) {
    allow(kControlDomain, *config_->control_curve);
  }
  if (config_->output_curve) {
    allow(kOutputDomain, *config_->output_curve);
  }
  WaitZap();
}

void Daemon::SetUpOutput() {
  output_ = zmq::socket_t(zmq_, zmq::socket_type::pub);
  output_.set(zmq::sockopt::sndhwm, config_->output_send_hwm);
  output_.set(zmq::sockopt::linger, kOutputLingerMs);
  if (config_->output_curve) {
    output_.set(zmq::sockopt::curve_server, 1);
    output_.set(zmq::sockopt::curve_secretkey, config_->output_curve->server_secret_key);
    output_.set(zmq::sockopt::zap_domain, kOutputDomain);
  }
  output_.bind(config_->output_bind);
  output_endpoint_ = config_->output_bind;
  spdlog::info("output bound endpoint={} curve={}", output_endpoint_,
               config_->output_curve ? "on" : "off");
}

void Daemon::SetUpControl() {
  control_ = std::make_unique<WatchedSocket>(io_, zmq_, zmq::socket_type::rep);
  zmq::socket_t& s = control_->socket();
  s.set(zmq::sockopt::linger, 0);
  if (config_->control_curve) {
    s.set(zmq::sockopt::curve_server, 1);
    s.set(zmq::sockopt::curve_secretkey, config_->control_curve->server_secret_key);
    s.set(zmq::sockopt::zap_domain, kControlDomain);
  }
  s.bind(config_->control_bind);
  control_endpoint_ = config_->control_bind;
  spdlog::info("control bound endpoint={} curve={}", control_endpoint_,
               config_->control_curve ? "on" : "off");
  WaitControl();
}

void Daemon::SetUpInput() {
  input_ = std::make_unique<WatchedSocket>(io_, zmq_, zmq::socket_type::sub);
  zmq::socket_t& s = input_->socket();
  s.set(zmq::sockopt::rcvhwm, config_->input_receive_hwm);
  s.set(zmq::sockopt::maxmsgsize,
        static_cast<std::int64_t>(config_->input_max_message_bytes * kTransportLimitFactor));
  s.set(zmq::sockopt::linger, 0);

  // The monitor tells us about connections, and about those libzmq gave up on.
  zmq_socket_monitor(s.handle(), kMonitorEndpoint,
                     ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED);
  input_monitor_ = std::make_unique<WatchedSocket>(io_, zmq_, zmq::socket_type::pair);
  input_monitor_->socket().connect(kMonitorEndpoint);

  subscribed_ =
      config_->input_subscribe.empty() ? std::vector<std::string>{""} : config_->input_subscribe;
  for (const std::string& prefix : subscribed_) {
    s.set(zmq::sockopt::subscribe, prefix);
  }
  for (const std::string& endpoint : config_->input_bind) {
    s.bind(endpoint);
    bound_.push_back(endpoint);
    spdlog::info("input bound endpoint={}", endpoint);
  }
  for (const std::string& endpoint : config_->input_connect) {
    s.connect(endpoint);
    connected_.push_back(endpoint);
    spdlog::info("input connecting endpoint={}", endpoint);
  }
  WaitMonitor();
  WaitInput();
}

void Daemon::SetUpHttp() {
  http_ = std::make_unique<HttpServer>(io_, [this](std::string_view t) { return Http(t); });
  if (auto why = http_->Listen(config_->http_host, config_->http_port)) {
    throw StartError("http.bind: " + *why);
  }
  http_listening_ = config_->http_host + ":" + std::to_string(config_->http_port);
  spdlog::info("http listening address={}", http_listening_);
}

int Daemon::Run() {
  WaitSignals();
  ArmHeartbeat();
  ArmSnapshot();
  ArmHousekeeping();
  spdlog::info("dinamod running version={} config={} templates={}", Version(), config_->file,
               monitor_.templates());
  NotifySystemd("READY=1");
  io_.run();
  return exit_code_;
}

// ---------------------------------------------------------------------------------------------
// Input

void Daemon::WaitInput() {
  if (!stopping_ && input_) {
    input_->Wait([this] { DrainInput(); });
  }
}

void Daemon::DrainInput() {
  int taken = 0;
  try {
    while (!stopping_ && taken < kInputBatch) {
      frames_.clear();
      if (!zmq::recv_multipart(input_->socket(), std::back_inserter(frames_),
                               zmq::recv_flags::dontwait)) {
        break;
      }
      ++taken;
      HandleMessage(Clock::now());
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("input receive failed: {}", e.what());
  } catch (const std::exception& e) {
    // Nothing may leave an Asio handler; the message is lost, the daemon goes on.
    metrics_.Reject("internal_error");
    spdlog::error("message dropped reason=internal_error detail=\"{}\"", e.what());
  }
  if (taken > 0) {
    metrics_.input_backlog = static_cast<std::uint64_t>(taken);
    metrics_.input_backlog_max = std::max<std::uint64_t>(metrics_.input_backlog_max, taken);
  }
  if (stopping_) {
    return;
  }
  if (taken == kInputBatch) {
    asio::post(io_, [this] { DrainInput(); });  // more may wait: let the others have a turn
    return;
  }
  WaitInput();
}

void Daemon::HandleMessage(Clock::time_point received) {
  ++metrics_.histograms_received;
  frame_views_.clear();
  for (const zmq::message_t& f : frames_) {
    frame_views_.emplace_back(static_cast<const char*>(f.data()), f.size());
  }
  MonitorResult& result = monitor_.OnMessage(frame_views_, NowUnixNs());
  if (result.rejection) {
    metrics_.Reject(result.rejection->reason);
    LogRejection(*result.rejection);
    return;
  }
  PublishResult(result, received);
}

void Daemon::PublishResult(MonitorResult& result, Clock::time_point received) {
  if (result.reset_alarm) {
    ++metrics_.templates_reset;
    PublishAlarm(*result.reset_alarm);
  }
  if (result.unshelved_alarm) {
    PublishAlarm(*result.unshelved_alarm);
  }
  if (result.verdict) {
    result.verdict->set_sequence(++sequence_);
    Publish(Topic("verdict/", result.verdict->histogram()), *result.verdict);
    ++metrics_.verdicts_published;
    metrics_.verdict_latency.Observe(
        std::chrono::duration<double>(Clock::now() - received).count());
    spdlog::trace("verdict histogram={} run={} s={}", result.verdict->histogram(),
                  result.verdict->run(), result.verdict->log_reduced_chi2());
  }
  if (result.alarm) {
    if (result.verdict) {
      result.alarm->mutable_verdict()->set_sequence(result.verdict->sequence());
    }
    PublishAlarm(*result.alarm);
  }
  if (result.summary) {
    PublishSummary(*result.summary);
  }
}

void Daemon::PublishAlarm(v1::Alarm& alarm) {
  alarm.set_sequence(++sequence_);
  Publish(Topic("alarm/", alarm.histogram()), alarm);
  if (alarm.event() == v1::ALARM_EVENT_RAISED) {
    ++metrics_.alarms_raised;
  } else if (alarm.event() == v1::ALARM_EVENT_CLEARED) {
    ++metrics_.alarms_cleared;
  }
}

void Daemon::PublishSummary(v1::RunSummary& summary) {
  summary.set_sequence(++sequence_);
  Publish("run/" + std::to_string(summary.run()), summary);
  spdlog::info(
      "run summary run={} histograms={} none={} minor={} major={} undefined={} "
      "invalid={}",
      summary.run(), summary.histograms(), summary.none(), summary.minor(), summary.major(),
      summary.undefined(), summary.invalid());
}

void Daemon::ArmHousekeeping() {
  housekeeping_timer_.expires_after(std::chrono::seconds(1));
  housekeeping_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) {
      Housekeeping();
      ArmHousekeeping();
    }
  });
}

void Daemon::Housekeeping() {
  const std::int64_t now = NowUnixNs();
  monitor_.FlushAlarmLog(now);
  for (v1::Alarm& alarm : monitor_.ExpireShelving(now)) {
    PublishAlarm(alarm);
  }
  for (v1::RunSummary& summary : monitor_.DueSummaries(now, config_->run_summary_after_s)) {
    PublishSummary(summary);
  }
}

void Daemon::LogRejection(const Rejection& r) {
  Suppressed& s = suppressed_[r.reason];
  const auto now = Clock::now();
  if (now - s.last_logged < kLogEvery) {
    ++s.count;
    return;
  }
  if (s.count > 0) {
    spdlog::warn("message refused reason={} histogram=\"{}\" detail=\"{}\" suppressed={}", r.reason,
                 Printable(r.histogram), Printable(r.detail), s.count);
  } else {
    spdlog::warn("message refused reason={} histogram=\"{}\" detail=\"{}\"", r.reason,
                 Printable(r.histogram), Printable(r.detail));
  }
  s.last_logged = now;
  s.count = 0;
}

void Daemon::FlushSuppressed(bool force) {
  const auto now = Clock::now();
  for (auto& [reason, s] : suppressed_) {
    if (s.count > 0 && (force || now - s.last_logged >= kLogEvery)) {
      spdlog::warn("message refused reason={} suppressed={} (repeats since the last line)", reason,
                   s.count);
      s.count = 0;
      s.last_logged = now;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Input socket monitor: connections, and those libzmq drops for good

void Daemon::WaitMonitor() {
  if (!stopping_ && input_monitor_) {
    input_monitor_->Wait([this] { DrainMonitor(); });
  }
}

void Daemon::DrainMonitor() {
  try {
    std::vector<zmq::message_t> event;
    while (zmq::recv_multipart(input_monitor_->socket(), std::back_inserter(event),
                               zmq::recv_flags::dontwait)) {
      if (event.size() == 2 && event[0].size() >= 2) {
        std::uint16_t id = 0;
        std::memcpy(&id, event[0].data(), sizeof id);
        const std::string endpoint = event[1].to_string();
        if (id == ZMQ_EVENT_CONNECTED) {
          spdlog::info("input connected endpoint={}", endpoint);
          disconnected_.erase(endpoint);
        } else if (id == ZMQ_EVENT_CONNECT_RETRIED) {
          disconnected_.erase(endpoint);
        } else if (id == ZMQ_EVENT_DISCONNECTED) {
          spdlog::info("input disconnected endpoint={}", endpoint);
          disconnected_[endpoint] = Clock::now();
          drop_timer_.expires_after(kRetryGrace);
          drop_timer_.async_wait([this](const boost::system::error_code& ec) {
            if (!ec) {
              CheckDropped();
            }
          });
        }
      }
      event.clear();
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("input monitor failed: {}", e.what());
  }
  WaitMonitor();
}

void Daemon::CheckDropped() {
  // A disconnection with no retry after it means libzmq gave up on the connection, which it does
  // on a frame over ZMQ_MAXMSGSIZE or another protocol error. We connect again ourselves.
  DrainMonitor();
  for (auto it = disconnected_.begin(); it != disconnected_.end();) {
    const bool ours =
        std::find(connected_.begin(), connected_.end(), it->first) != connected_.end();
    if (!ours || Clock::now() - it->second < kRetryGrace) {
      it = ours ? std::next(it) : disconnected_.erase(it);
      continue;
    }
    metrics_.Reject("transport_dropped");
    spdlog::warn(
        "message refused reason=transport_dropped endpoint={} detail=\"connection "
        "dropped by the transport (a frame over {} bytes or a protocol error)\"; "
        "connecting again",
        it->first, config_->input_max_message_bytes * kTransportLimitFactor);
    try {
      zmq_disconnect(input_->socket().handle(), it->first.c_str());
      input_->socket().connect(it->first);
    } catch (const zmq::error_t& e) {
      spdlog::error("input reconnect failed endpoint={}: {}", it->first, e.what());
    }
    it = disconnected_.erase(it);
  }
}

// ---------------------------------------------------------------------------------------------
// Output

const std::string& Daemon::Topic(std::string_view prefix, const std::string& histogram) {
  topic_.assign(prefix).append(histogram);
  return topic_;
}

void Daemon::Publish(const std::string& topic, const google::protobuf::MessageLite& body) {
  body.SerializeToString(&buffer_);
  try {
    if (!output_.send(zmq::buffer(topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait) ||
        !output_.send(zmq::buffer(buffer_), zmq::send_flags::dontwait)) {
      spdlog::warn("output queue full, message dropped topic={}", topic);
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("publish failed topic={}: {}", topic, e.what());
  }
}

void Daemon::ArmHeartbeat() {
  heartbeat_timer_.expires_after(Millis(config_->heartbeat_s));
  heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) {
      Heartbeat();
      ArmHeartbeat();
    }
  });
}

void Daemon::Heartbeat() {
  v1::Heartbeat hb;
  hb.set_time_unix_ns(NowUnixNs());
  hb.set_uptime_s(std::chrono::duration<double>(Clock::now() - started_).count());
  hb.set_templates(monitor_.templates());
  hb.set_messages_received(metrics_.histograms_received);
  hb.set_messages_rejected(metrics_.RejectedTotal());
  hb.set_verdicts_published(metrics_.verdicts_published);
  hb.set_last_sequence(sequence_);
  hb.set_sequence(++sequence_);
  hb.set_version(Version());
  hb.set_alarms_active(monitor_.alarms_active());
  Publish("heartbeat", hb);
  ++metrics_.heartbeats_published;
  FlushSuppressed(false);
  spdlog::debug("heartbeat sequence={} templates={}", hb.sequence(), hb.templates());
}

void Daemon::ArmSnapshot() {
  snapshot_timer_.expires_after(Millis(config_->snapshot_interval_s));
  snapshot_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopping_) {
      WriteSnapshot("interval");
      ArmSnapshot();
    }
  });
}

bool Daemon::WriteSnapshot(const char* why) {
  const auto start = Clock::now();
  v1::Snapshot snapshot;
  snapshot.set_format_version(kSnapshotFormatVersion);
  snapshot.set_written_unix_ns(NowUnixNs());
  snapshot.set_last_sequence(sequence_);
  monitor_.SaveTo(snapshot);
  if (auto error = store_.Write(snapshot)) {
    ++metrics_.snapshot_failures;
    spdlog::error("snapshot not written file={} reason=\"{}\"", store_.current_path(), *error);
    return false;
  }
  ++metrics_.snapshots_written;
  last_snapshot_file_ = store_.current_path();
  last_snapshot_unix_ns_ = snapshot.written_unix_ns();
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  spdlog::info("snapshot written file={} templates={} last_sequence={} ms={:.1f} trigger={}",
               store_.current_path(), snapshot.histograms_size(), sequence_, ms, why);
  return true;
}

// ---------------------------------------------------------------------------------------------
// Control

void Daemon::WaitControl() {
  if (!stopping_ && control_) {
    control_->Wait([this] { DrainControl(); });
  }
}

void Daemon::DrainControl() {
  try {
    std::vector<zmq::message_t> request;
    while (!stopping_ && zmq::recv_multipart(control_->socket(), std::back_inserter(request),
                                             zmq::recv_flags::dontwait)) {
      ++metrics_.control_requests;
      const v1::Reply reply = Answer(request.empty() ? std::string() : request[0].to_string());
      reply.SerializeToString(&buffer_);
      control_->socket().send(zmq::buffer(buffer_), zmq::send_flags::dontwait);
      request.clear();
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("control socket failed: {}", e.what());
  }
  WaitControl();
}

v1::Reply Daemon::Answer(const std::string& request) {
  v1::Reply reply;
  v1::Command command;
  if (request.empty() || !command.ParseFromString(request)) {
    reply.set_error("malformed command: not a dinamo.v1.Command");
    return reply;
  }
  spdlog::debug("control command={} user={} host={}", static_cast<int>(command.action_case()),
                command.user(), command.host());
  switch (command.action_case()) {
    case v1::Command::kStatus:
      reply.set_ok(true);
      *reply.mutable_status() = Status();
      return reply;
    case v1::Command::kGetTemplate: {
      const std::string& name = command.get_template().histogram();
      auto view = monitor_.Template(name);
      if (!view) {
        reply.set_error("no template for histogram '" + name + "'");
        return reply;
      }
      reply.set_ok(true);
      *reply.mutable_template_() = std::move(*view);
      return reply;
    }
    case v1::Command::kGetAlarms: {
      v1::AlarmTable table = monitor_.Alarms(command.get_alarms().prefix());
      table.set_last_sequence(sequence_);  // follow the PUB stream from after this one
      reply.set_ok(true);
      *reply.mutable_alarms() = std::move(table);
      return reply;
    }
    case v1::Command::ACTION_NOT_SET:
      reply.set_error("command has no action");
      return reply;
    default:
      break;
  }

  const Actor who{Printable(command.user()), Printable(command.host()),
                  Printable(command.comment())};
  const std::int64_t now = NowUnixNs();
  CommandOutcome outcome;
  switch (command.action_case()) {
    case v1::Command::kSetLabel:
      outcome = monitor_.SetLabel(command.set_label(), who);
      break;
    case v1::Command::kAcknowledge:
      outcome = monitor_.Acknowledge(command.acknowledge().histogram(), who, now);
      break;
    case v1::Command::kShelve:
      outcome =
          monitor_.Shelve(command.shelve().histogram(), command.shelve().until_unix_s(), who, now);
      break;
    case v1::Command::kUnshelve:
      outcome = monitor_.Unshelve(command.unshelve().histogram(), who, now);
      break;
    case v1::Command::kDisable:
      outcome = monitor_.Disable(command.disable().histogram(), who, now);
      break;
    case v1::Command::kEnable:
      outcome = monitor_.Enable(command.enable().histogram(), who, now);
      break;
    case v1::Command::kRebaseline:
      outcome = monitor_.Rebaseline(command.rebaseline().pattern(), who, now);
      metrics_.templates_reset += outcome.affected;
      break;
    default:
      reply.set_error("unknown action " + std::to_string(command.action_case()));
      return reply;
  }
  if (outcome.refused) {
    spdlog::info("control command refused action={} user={} host={} reason=\"{}\"",
                 static_cast<int>(command.action_case()), who.user, who.host, *outcome.refused);
    reply.set_error(*outcome.refused);
    return reply;
  }
  for (v1::Alarm& alarm : outcome.alarms) {
    PublishAlarm(alarm);
  }
  reply.set_ok(true);
  reply.mutable_action()->set_affected(outcome.affected);
  reply.mutable_action()->set_detail(outcome.detail);
  return reply;
}

v1::DaemonStatus Daemon::Status() const {
  v1::DaemonStatus s;
  s.set_version(Version());
  s.set_uptime_s(std::chrono::duration<double>(Clock::now() - started_).count());
  s.set_templates(monitor_.templates());
  s.set_messages_received(metrics_.histograms_received);
  s.set_messages_rejected(metrics_.RejectedTotal());
  s.set_verdicts_published(metrics_.verdicts_published);
  s.set_last_sequence(sequence_);
  s.set_config_file(config_->file);
  s.set_config_loaded_unix_ns(config_loaded_unix_ns_);
  s.set_alarms_active(monitor_.alarms_active());
  return s;
}

// ZAP (ZeroMQ RFC 27): libzmq asks us whether a CURVE client may talk to the control socket.
void Daemon::WaitZap() {
  if (!stopping_ && zap_) {
    zap_->Wait([this] { DrainZap(); });
  }
}

void Daemon::DrainZap() {
  try {
    std::vector<zmq::message_t> request;
    while (zmq::recv_multipart(zap_->socket(), std::back_inserter(request),
                               zmq::recv_flags::dontwait)) {
      std::string id = request.size() > 1 ? request[1].to_string() : std::string();
      bool allowed = false;
      const std::string domain = request.size() > 2 ? request[2].to_string() : std::string();
      const auto keys = zap_allowed_.find(domain);
      if (request.size() >= 7 && request[0].to_string() == "1.0" &&
          request[5].to_string() == "CURVE" && keys != zap_allowed_.end()) {
        const std::string key = request[6].to_string();
        allowed = std::find(keys->second.begin(), keys->second.end(), key) != keys->second.end();
      }
      if (!allowed) {
        // dinamo_control_clients_refused_total counts the control socket's refusals only.
        const char* socket = domain == kControlDomain ? "control" : "output";
        if (domain == kControlDomain) {
          ++metrics_.control_refusals;
        }
        const auto now = Clock::now();
        if (now - last_zap_log_ >= kLogEvery) {
          spdlog::warn(
              "{} client refused address={} (not in {}.curve.allowed_clients)"
              " control_refused_total={}",
              socket, Printable(request.size() > 3 ? request[3].to_string() : std::string()),
              socket, metrics_.control_refusals);
          last_zap_log_ = now;
        }
      }
      std::array<zmq::const_buffer, 6> reply = {
          zmq::str_buffer("1.0"),
          zmq::buffer(id),
          allowed ? zmq::str_buffer("200") : zmq::str_buffer("400"),
          allowed ? zmq::str_buffer("OK") : zmq::str_buffer("client key not allowed"),
          zmq::str_buffer(""),
          zmq::str_buffer("")};
      zmq::send_multipart(zap_->socket(), reply);
      request.clear();
    }
  } catch (const zmq::error_t& e) {
    spdlog::error("ZAP handler failed: {}", e.what());
  }
  WaitZap();
}

// ---------------------------------------------------------------------------------------------
// Signals, reload and stop

void Daemon::WaitSignals() {
  signals_.async_wait([this](const boost::system::error_code& ec, int number) {
    if (ec) {
      return;
    }
    if (number == SIGHUP) {
      spdlog::info("signal SIGHUP: reloading config={}", config_->file);
      NotifySystemd("RELOADING=1");
      Reload();
      NotifySystemd("READY=1");
      WaitSignals();
      return;
    }
    Stop(number);
  });
}

void Daemon::Reload() {
  std::shared_ptr<const Config> fresh;
  try {
    fresh = std::make_shared<const Config>(LoadConfig(config_->file));
  } catch (const ConfigError& e) {
    ++metrics_.config_refusals;
    spdlog::error("config refused, keeping the running one: {}", e.what());
    return;
  }
  if (fresh->control_curve != config_->control_curve) {
    spdlog::warn("control.curve changed: takes effect at the next start");
  }
  if (fresh->output_curve != config_->output_curve) {
    spdlog::warn("output.curve changed: takes effect at the next start");
  }
  if (fresh->state_directory != config_->state_directory) {
    spdlog::warn("state.directory changed: takes effect at the next start");
  }
  if (fresh->training != config_->training) {
    spdlog::warn("training changed: takes effect at the next start");
  }
  const std::shared_ptr<const Config> old = config_;
  config_ = fresh;
  settings_.Reset(config_);
  monitor_.ConfigChanged();
  spdlog::set_level(spdlog::level::from_str(config_->log_level));
  ApplyEndpoints(*old, *config_);
  config_loaded_unix_ns_ = NowUnixNs();
  ++metrics_.config_reloads;
  ArmHeartbeat();
  ArmSnapshot();
  spdlog::info("config reloaded file={} rules={} threshold={} log_level={}", config_->file,
               config_->rules.size(), config_->defaults.threshold, config_->log_level);
}

void Daemon::ApplyEndpoints(const Config& old_config, const Config& c) {
  zmq::socket_t& in = input_->socket();
  try {
    in.set(zmq::sockopt::rcvhwm, c.input_receive_hwm);
    in.set(zmq::sockopt::maxmsgsize,
           static_cast<std::int64_t>(c.input_max_message_bytes * kTransportLimitFactor));
  } catch (const zmq::error_t& e) {
    spdlog::error("input options not changed: {}", e.what());
  }

  // Subscriptions, connections and binds: only the differences.
  const auto subs = c.input_subscribe.empty() ? std::vector<std::string>{""} : c.input_subscribe;
  for (const std::string& p : AsSet(subscribed_)) {
    if (!AsSet(subs).contains(p)) {
      in.set(zmq::sockopt::unsubscribe, p);
    }
  }
  for (const std::string& p : AsSet(subs)) {
    if (!AsSet(subscribed_).contains(p)) {
      in.set(zmq::sockopt::subscribe, p);
    }
  }
  subscribed_ = subs;
  for (const std::string& e : AsSet(connected_)) {
    if (!AsSet(c.input_connect).contains(e)) {
      zmq_disconnect(in.handle(), e.c_str());
      spdlog::info("input disconnected endpoint={} (config)", e);
    }
  }
  for (const std::string& e : c.input_connect) {
    if (!AsSet(connected_).contains(e)) {
      zmq_connect(in.handle(), e.c_str());
      spdlog::info("input connecting endpoint={}", e);
    }
  }
  connected_ = c.input_connect;
  for (const std::string& e : AsSet(bound_)) {
    if (!AsSet(c.input_bind).contains(e)) {
      zmq_unbind(in.handle(), e.c_str());
    }
  }
  std::vector<std::string> bound;
  for (const std::string& e : c.input_bind) {
    if (AsSet(bound_).contains(e) || zmq_bind(in.handle(), e.c_str()) == 0) {
      bound.push_back(e);
    } else {
      spdlog::error("input bind failed endpoint={}: {}", e, zmq_strerror(zmq_errno()));
    }
  }
  bound_ = bound;

  if (c.output_bind != output_endpoint_) {
    if (zmq_bind(output_.handle(), c.output_bind.c_str()) == 0) {
      zmq_unbind(output_.handle(), output_endpoint_.c_str());
      output_endpoint_ = c.output_bind;
      spdlog::info("output bound endpoint={}", output_endpoint_);
    } else {
      spdlog::error("output bind failed endpoint={}: {}; keeping endpoint={}", c.output_bind,
                    zmq_strerror(zmq_errno()), output_endpoint_);
    }
  }
  if (c.control_bind != control_endpoint_) {
    zmq::socket_t& ctl = control_->socket();
    if (zmq_bind(ctl.handle(), c.control_bind.c_str()) == 0) {
      zmq_unbind(ctl.handle(), control_endpoint_.c_str());
      control_endpoint_ = c.control_bind;
      spdlog::info("control bound endpoint={}", control_endpoint_);
    } else {
      spdlog::error("control bind failed endpoint={}: {}; keeping endpoint={}", c.control_bind,
                    zmq_strerror(zmq_errno()), control_endpoint_);
    }
  }
  const std::string http = c.http_host + ":" + std::to_string(c.http_port);
  if (http != http_listening_ || old_config.http_port != c.http_port) {
    if (auto why = http_->Listen(c.http_host, c.http_port)) {
      spdlog::error("http not moved to address={}: {}; keeping address={}", http, *why,
                    http_listening_);
    } else {
      http_listening_ = http;
      spdlog::info("http listening address={}", http_listening_);
    }
  }
}

void Daemon::Stop(int signal_number) {
  spdlog::info("signal {}: stopping", signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  // Stop taking input first; the message in hand has been handled (one thread).
  NotifySystemd("STOPPING=1");
  stopping_ = true;
  input_monitor_.reset();
  input_.reset();
  FlushSuppressed(true);
  if (training_pool_) {
    // Running trainings stop at their next step and queued ones are dropped: the snapshot keeps
    // the model as last trained and the good runs recorded since (daemon/README.md).
    training_pool_->Stop();
  }
  if (!WriteSnapshot("shutdown")) {
    exit_code_ = 1;  // the next start would not continue exactly: let the supervisor know
  }

  boost::system::error_code ignored;
  signals_.cancel(ignored);
  heartbeat_timer_.cancel();
  snapshot_timer_.cancel();
  housekeeping_timer_.cancel();
  drop_timer_.cancel();
  http_->Close();
  control_.reset();
  zap_.reset();
  output_.close();  // lingers up to kOutputLingerMs to hand the last verdicts over
  io_.stop();
  spdlog::info("dinamod stopped last_sequence={} exit_code={}", sequence_, exit_code_);
}

// ---------------------------------------------------------------------------------------------
// HTTP

HttpResponse Daemon::Http(std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (path == "/metrics") {
    MetricsGauges g;
    g.templates = monitor_.templates();
    g.alarms_active = monitor_.alarms_active();
    g.uptime_s = std::chrono::duration<double>(Clock::now() - started_).count();
    g.last_sequence = sequence_;
    std::string body = RenderPrometheus(metrics_, g);
#if DINAMO_HAVE_TORCH
    trainer_->RenderMetrics(body);
#endif
    return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(body)};
  }
  if (path == "/healthz") {
    return stopping_ ? HttpResponse{503, "text/plain; charset=utf-8", "stopping\n"}
                     : HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
  }
  if (path == "/status") {
    return {200, "application/json", StatusJson()};
  }
  return {404, "text/plain; charset=utf-8", "not found; try /metrics, /healthz or /status\n"};
}

std::string Daemon::StatusJson() const {
  nlohmann::json j;
  j["version"] = Version();
  j["uptime_s"] = std::chrono::duration<double>(Clock::now() - started_).count();
  j["config_file"] = config_->file;
  j["config_loaded_unix_ns"] = config_loaded_unix_ns_;
  j["templates"] = monitor_.templates();
  j["alarms_active"] = monitor_.alarms_active();
  j["messages_received"] = metrics_.histograms_received;
  j["messages_rejected"] = metrics_.RejectedTotal();
  nlohmann::json reasons = nlohmann::json::object();
  for (const auto& [reason, n] : metrics_.rejected) {
    if (n > 0) {
      reasons[reason] = n;
    }
  }
  j["rejected_by_reason"] = reasons;
  j["verdicts_published"] = metrics_.verdicts_published;
  j["alarms_raised"] = metrics_.alarms_raised;
  j["last_sequence"] = sequence_;
  j["endpoints"] = {{"input_connect", connected_},
                    {"input_bind", bound_},
                    {"output", output_endpoint_},
                    {"control", control_endpoint_},
                    {"http", http_listening_}};
  j["snapshot"] = {{"file", last_snapshot_file_},
                   {"written_unix_ns", last_snapshot_unix_ns_},
                   {"written", metrics_.snapshots_written},
                   {"failures", metrics_.snapshot_failures}};
  j["stopping"] = stopping_;
  return j.dump();
}

}  // namespace dinamo::daemon
