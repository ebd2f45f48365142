// dinamo-console: a shifter's terminal on dinamod. It follows the daemon's PUB stream and prints
// one line per alarm (and per verdict on request), or sends one command to the control socket
// and prints the reply (DESIGN.md sections 5 and 7).

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dinamo/v1/control.pb.h"
#include "dinamo/v1/histogram.pb.h"
#include "dinamo/v1/verdict.pb.h"
#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include <unistd.h>

namespace {

// 0: done; 1: no reply, or the bus failed; 2: bad command line; 3: the daemon refused.
constexpr int kExitOk = 0;
constexpr int kExitNoReply = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRefused = 3;

volatile std::sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string connect = "tcp://127.0.0.1:5551";
  std::string control = "tcp://127.0.0.1:5552";
  std::string prefix;
  bool verdicts = false;
  bool summaries = false;
  bool heartbeats = false;
  double max_seconds = 0.0;
  std::uint64_t exit_after = 0;

  // One-shot commands on the control socket.
  bool status = false;
  std::string template_name;
  std::vector<std::string> label;  // NAME RUN good|bad
  bool whole_run = false;
  std::string ack;
  std::vector<std::string> shelve;  // NAME UNTIL_UNIX_S
  std::string unshelve;
  std::string disable;
  std::string enable;
  std::string rebaseline;
  bool alarms = false;
  std::string user;
  std::string comment;
  double timeout_s = 5.0;
  // --control given on the command line: following starts with the daemon's alarm table.
  bool control_given = false;

  // CurveZMQ (Z85 keys): the daemon's public key and this console's key pair, for a daemon
  // with output.curve or control.curve.
  std::string server_key;
  std::string public_key;
  std::string secret_key;
};

// Makes `socket` a CurveZMQ client when the options carry keys.
void UseCurve(zmq::socket_t& socket, const Options& o) {
  if (o.server_key.empty()) {
    return;
  }
  socket.set(zmq::sockopt::curve_serverkey, o.server_key);
  socket.set(zmq::sockopt::curve_publickey, o.public_key);
  socket.set(zmq::sockopt::curve_secretkey, o.secret_key);
}

// ---------------------------------------------------------------------------------------------
// Formatting

std::string FormatTime(std::int64_t unix_ns) {
  if (unix_ns <= 0) {
    return "-";
  }
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1000000000);
  const int millis = static_cast<int>((unix_ns / 1000000) % 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[40];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, millis);
  return out;
}

// "ALARM_STATE_UNACKNOWLEDGED" -> "UNACKNOWLEDGED".
std::string Short(const std::string& enum_name, std::string_view prefix) {
  return enum_name.starts_with(prefix) ? enum_name.substr(prefix.size()) : enum_name;
}

std::string StateName(dinamo::v1::AlarmState s) {
  return Short(dinamo::v1::AlarmState_Name(s), "ALARM_STATE_");
}
std::string SeverityName(dinamo::v1::Severity s) {
  return Short(dinamo::v1::Severity_Name(s), "SEVERITY_");
}
std::string EventName(dinamo::v1::AlarmEvent e) {
  return Short(dinamo::v1::AlarmEvent_Name(e), "ALARM_EVENT_");
}

std::int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "s=2.310 > T=1.000 worst bin=17 pull=+8.40"
std::string Judgement(const dinamo::v1::Verdict& v) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "s=%.3f %s T=%.3f", v.log_reduced_chi2(),
                v.log_reduced_chi2() > v.threshold() ? ">" : "<=", v.threshold());
  std::string out = buf;
  if (v.pulls_size() > 0) {
    const auto& p = v.pulls(0);
    std::snprintf(buf, sizeof buf, " worst bin=%u pull=%+.2f (observed %.4g expected %.4g)",
                  p.bin(), p.pull(), p.observed(), p.expected());
    out += buf;
  }
  return out;
}

void PrintAlarm(const dinamo::v1::Alarm& a) {
  std::string line = FormatTime(a.time_unix_ns()) + " ALARM " + EventName(a.event()) + " " +
                     a.histogram() + " state=" + StateName(a.state()) +
                     " severity=" + SeverityName(a.severity()) + " run=" + std::to_string(a.run());
  if (a.has_verdict()) {
    line += " " + Judgement(a.verdict());
  }
  if (!a.user().empty()) {
    line += " by=" + a.user();
  }
  if (a.state() == dinamo::v1::ALARM_STATE_SHELVED) {
    line += " until=" + FormatTime(a.shelved_until_unix_s() * 1000000000);
  }
  std::printf("%s\n", line.c_str());
}

// latency_ms: from publication to scoring (the daemon's clocks); age_ms: from publication to
// this line (valid when publisher and console share a clock).
void PrintVerdict(const dinamo::v1::Verdict& v) {
  const double latency_ms =
      static_cast<double>(v.time_unix_ns() - v.histogram_time_unix_ns()) * 1e-6;
  const double age_ms = static_cast<double>(NowUnixNs() - v.histogram_time_unix_ns()) * 1e-6;
  std::printf("%s VERDICT %s run=%llu %s%s severity=%s %s latency_ms=%.3f age_ms=%.3f\n",
              FormatTime(v.time_unix_ns()).c_str(), v.histogram().c_str(),
              static_cast<unsigned long long>(v.run()), v.final() ? "final" : "partial",
              v.warmup() ? " warmup" : "", SeverityName(v.severity()).c_str(), Judgement(v).c_str(),
              latency_ms, age_ms);
}

void PrintSummary(const dinamo::v1::RunSummary& r) {
  std::string worst;
  for (const auto& w : r.worst()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", w.log_reduced_chi2());
    worst += " " + w.histogram() + "(" + buf + ")";
  }
  std::printf("%s RUN %llu histograms=%u none=%u minor=%u major=%u undefined=%u invalid=%u%s%s\n",
              FormatTime(r.time_unix_ns()).c_str(), static_cast<unsigned long long>(r.run()),
              r.histograms(), r.none(), r.minor(), r.major(), r.undefined(), r.invalid(),
              worst.empty() ? "" : " worst:", worst.c_str());
}

void PrintHeartbeat(const dinamo::v1::Heartbeat& h) {
  std::printf(
      "%s HEARTBEAT version=%s uptime_s=%.0f templates=%llu received=%llu rejected=%llu "
      "verdicts=%llu alarms_active=%u\n",
      FormatTime(h.time_unix_ns()).c_str(), h.version().c_str(), h.uptime_s(),
      static_cast<unsigned long long>(h.templates()),
      static_cast<unsigned long long>(h.messages_received()),
      static_cast<unsigned long long>(h.messages_rejected()),
      static_cast<unsigned long long>(h.verdicts_published()), h.alarms_active());
}

// ---------------------------------------------------------------------------------------------
// Following the PUB stream

// The daemon numbers everything it publishes with one counter. When this console sees every
// topic, a jump in that counter is a lost message; with a filtered view jumps are expected, and
// only a counter that goes back (a restarted daemon) is worth a line.
class SequenceWatch {
 public:
  explicit SequenceWatch(bool sees_everything) : sees_everything_(sees_everything) {}

  void Saw(std::uint64_t sequence) {
    if (last_ != 0 && sequence <= last_) {
      std::fprintf(stderr, "sequence went back from=%llu to=%llu (daemon restarted?)\n",
                   static_cast<unsigned long long>(last_),
                   static_cast<unsigned long long>(sequence));
    } else if (sees_everything_ && last_ != 0 && sequence > last_ + 1) {
      const std::uint64_t missed = sequence - last_ - 1;
      missed_ += missed;
      std::fprintf(stderr, "GAP missed=%llu after sequence=%llu\n",
                   static_cast<unsigned long long>(missed), static_cast<unsigned long long>(last_));
    }
    last_ = sequence;
  }

  std::uint64_t missed() const { return missed_; }

 private:
  bool sees_everything_;
  std::uint64_t last_ = 0;
  std::uint64_t missed_ = 0;
};

struct Counts {
  std::uint64_t alarms = 0, verdicts = 0, summaries = 0, heartbeats = 0, malformed = 0;
  std::uint64_t printed = 0;
  // Messages up to this sequence number are in the alarm table printed at the start.
  std::uint64_t table_sequence = 0;
};

// Reads one message of type Message, notes its sequence number and counts it in `count`;
// prints it when `print` is set. Returns false when the body is not a Message.
template <typename Message>
bool Take(const zmq::message_t& body, bool print, void (*printer)(const Message&),
          std::uint64_t& count, SequenceWatch& watch, Counts& n) {
  Message m;
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    return false;
  }
  if (m.sequence() <= n.table_sequence) {
    return true;  // published before the table was taken: the table shows it already
  }
  watch.Saw(m.sequence());
  ++count;
  if (print) {
    printer(m);
    ++n.printed;
  }
  return true;
}

// Handles one message; returns false when it could not be read. Unknown topics are ignored.
bool Handle(std::string_view topic, const zmq::message_t& body, const Options& o,
            SequenceWatch& watch, Counts& n) {
  if (topic.starts_with("alarm/")) {
    return Take(body, true, PrintAlarm, n.alarms, watch, n);
  }
  if (topic.starts_with("verdict/")) {
    return Take(body, true, PrintVerdict, n.verdicts, watch, n);
  }
  if (topic.starts_with("run/")) {
    return Take(body, o.summaries, PrintSummary, n.summaries, watch, n);
  }
  if (topic == "heartbeat") {
    return Take(body, o.heartbeats, PrintHeartbeat, n.heartbeats, watch, n);
  }
  return true;
}

// Receives and handles one message if one is waiting; returns false when none is.
bool ReceiveOne(zmq::socket_t& sub, const Options& o, SequenceWatch& watch, Counts& n) {
  zmq::message_t topic, body;
  if (!sub.recv(topic, zmq::recv_flags::dontwait)) {
    return false;
  }
  // A message is topic plus body; anything else is drained and counted as malformed.
  bool complete = topic.more() && sub.recv(body, zmq::recv_flags::none);
  while (sub.get(zmq::sockopt::rcvmore)) {
    zmq::message_t extra;
    (void)sub.recv(extra, zmq::recv_flags::none);
    complete = false;
  }
  if (!complete || !Handle(topic.to_string_view(), body, o, watch, n)) {
    ++n.malformed;
    std::fprintf(stderr, "malformed message topic=%s\n", topic.to_string().c_str());
  }
  return true;
}

std::optional<dinamo::v1::Reply> Request(const Options& o, const dinamo::v1::Command& command);
void PrintAlarmTable(const dinamo::v1::AlarmTable& table);
dinamo::v1::Command BaseCommand(const Options& o);

int Follow(const Options& o) {
  zmq::context_t context;
  zmq::socket_t sub(context, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 0);
  sub.set(zmq::sockopt::linger, 0);
  UseCurve(sub, o);
  sub.connect(o.connect);
  sub.set(zmq::sockopt::subscribe, "alarm/" + o.prefix);
  if (o.verdicts) {
    sub.set(zmq::sockopt::subscribe, "verdict/" + o.prefix);
  }
  sub.set(zmq::sockopt::subscribe, "heartbeat");
  sub.set(zmq::sockopt::subscribe, "run/");
  std::fprintf(stderr, "following %s prefix='%s'%s\n", o.connect.c_str(), o.prefix.c_str(),
               o.verdicts ? " with verdicts" : "");

  SequenceWatch watch(o.prefix.empty() && o.verdicts);
  Counts n;
  if (o.control_given) {
    // Subscribed first, then the table: whatever is published in between arrives on the
    // stream, and what the table already shows is skipped by its sequence number.
    dinamo::v1::Command get = BaseCommand(o);
    get.mutable_get_alarms()->set_prefix(o.prefix);
    const auto reply = Request(o, get);
    if (!reply || !reply->ok()) {
      std::fprintf(stderr, "dinamo-console: no alarm table from %s: %s\n", o.control.c_str(),
                   reply ? reply->error().c_str() : "no reply");
      return kExitNoReply;
    }
    PrintAlarmTable(reply->alarms());
    n.table_sequence = reply->alarms().last_sequence();
    std::fflush(stdout);
  }
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(
                                             std::chrono::duration<double>(o.max_seconds));
  const auto done = [&] {
    return g_stop || (o.exit_after > 0 && n.printed >= o.exit_after) ||
           (o.max_seconds > 0 && std::chrono::steady_clock::now() >= deadline);
  };
  std::vector<zmq::pollitem_t> items = {{sub.handle(), 0, ZMQ_POLLIN, 0}};
  while (!done()) {
    try {
      // The short poll keeps signals and --max-seconds responsive on a quiet bus.
      if (zmq::poll(items, std::chrono::milliseconds(100)) == 0) {
        continue;
      }
      while (!done() && ReceiveOne(sub, o, watch, n)) {
      }
      std::fflush(stdout);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) {
        throw;
      }
    }
  }
  std::fflush(stdout);
  std::fprintf(
      stderr,
      "received alarms=%llu verdicts=%llu summaries=%llu heartbeats=%llu "
      "malformed=%llu missed=%llu\n",
      static_cast<unsigned long long>(n.alarms), static_cast<unsigned long long>(n.verdicts),
      static_cast<unsigned long long>(n.summaries), static_cast<unsigned long long>(n.heartbeats),
      static_cast<unsigned long long>(n.malformed),
      static_cast<unsigned long long>(watch.missed()));
  return kExitOk;
}

// ---------------------------------------------------------------------------------------------
// One command on the control socket

std::string Hostname() {
  char host[256] = {};
  return gethostname(host, sizeof host - 1) == 0 ? host : "";
}

std::string UserName(const Options& o) {
  if (!o.user.empty()) {
    return o.user;
  }
  const char* user = std::getenv("USER");
  return user ? user : "";
}

bool WantsCommand(const Options& o) {
  return o.status || !o.template_name.empty() || !o.label.empty() || !o.ack.empty() ||
         !o.shelve.empty() || !o.rebaseline.empty() || o.alarms || !o.unshelve.empty() ||
         !o.disable.empty() || !o.enable.empty();
}

std::uint64_t ParseUnsigned(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || text.empty() || text.front() == '-') {
    throw CLI::ValidationError(what, "'" + text + "' is not a non-negative integer");
  }
  return value;
}

dinamo::v1::Command BaseCommand(const Options& o) {
  dinamo::v1::Command c;
  c.set_user(UserName(o));
  c.set_host(Hostname());
  c.set_comment(o.comment);
  return c;
}

dinamo::v1::Command BuildCommand(const Options& o) {
  dinamo::v1::Command c = BaseCommand(o);
  if (o.status) {
    c.mutable_status();
  } else if (!o.template_name.empty()) {
    c.mutable_get_template()->set_histogram(o.template_name);
  } else if (!o.label.empty()) {
    auto* l = c.mutable_set_label();
    l->set_histogram(o.label[0]);
    l->set_run(ParseUnsigned(o.label[1], "--label RUN"));
    if (o.label[2] != "good" && o.label[2] != "bad") {
      throw CLI::ValidationError("--label", "the label must be good or bad, not " + o.label[2]);
    }
    l->set_label(o.label[2] == "good" ? dinamo::v1::LABEL_GOOD : dinamo::v1::LABEL_BAD);
    l->set_whole_run(o.whole_run);
  } else if (!o.ack.empty()) {
    c.mutable_acknowledge()->set_histogram(o.ack);
  } else if (!o.shelve.empty()) {
    auto* s = c.mutable_shelve();
    s->set_histogram(o.shelve[0]);
    s->set_until_unix_s(static_cast<std::int64_t>(ParseUnsigned(o.shelve[1], "--shelve UNTIL")));
  } else if (!o.rebaseline.empty()) {
    c.mutable_rebaseline()->set_pattern(o.rebaseline);
  } else if (!o.unshelve.empty()) {
    c.mutable_unshelve()->set_histogram(o.unshelve);
  } else if (!o.disable.empty()) {
    c.mutable_disable()->set_histogram(o.disable);
  } else if (!o.enable.empty()) {
    c.mutable_enable()->set_histogram(o.enable);
  } else {
    c.mutable_get_alarms()->set_prefix(o.prefix);
  }
  return c;
}

void PrintStatus(const dinamo::v1::DaemonStatus& s) {
  std::printf(
      "version=%s uptime_s=%.1f templates=%llu received=%llu rejected=%llu "
      "verdicts=%llu last_sequence=%llu alarms_active=%u config=%s loaded=%s\n",
      s.version().c_str(), s.uptime_s(), static_cast<unsigned long long>(s.templates()),
      static_cast<unsigned long long>(s.messages_received()),
      static_cast<unsigned long long>(s.messages_rejected()),
      static_cast<unsigned long long>(s.verdicts_published()),
      static_cast<unsigned long long>(s.last_sequence()), s.alarms_active(),
      s.config_file().c_str(), FormatTime(s.config_loaded_unix_ns()).c_str());
}

void PrintTemplate(const dinamo::v1::TemplateView& t) {
  std::printf(
      "template %s method=%s integral=%.6g learned_runs=%llu last_run=%llu "
      "last_final_run=%llu\n",
      t.histogram().c_str(), t.method().c_str(), t.integral(),
      static_cast<unsigned long long>(t.learned_runs()),
      static_cast<unsigned long long>(t.last_run()),
      static_cast<unsigned long long>(t.last_final_run()));
  for (const auto& axis : t.axes()) {
    std::printf("axis bins=%u low=%g high=%g%s%s\n", axis.bins(), axis.low(), axis.high(),
                axis.title().empty() ? "" : " title=", axis.title().c_str());
  }
  std::printf("%6s %14s %14s %10s\n", "bin", "mu", "sigma", "last_pull");
  for (int b = 0; b < t.mu_size(); ++b) {
    char pull[32] = "-";
    if (b < t.last_pulls_size()) {
      std::snprintf(pull, sizeof pull, "%+.3f", t.last_pulls(b));
    }
    std::printf("%6d %14.6g %14.6g %10s\n", b, t.mu(b), b < t.sigma_size() ? t.sigma(b) : 0.0,
                pull);
  }
}

void PrintAlarmTable(const dinamo::v1::AlarmTable& table) {
  std::printf("%-32s %-22s %-9s %8s %8s %8s %-24s %s\n", "histogram", "state", "severity", "run",
              "s", "T", "raised", "by");
  for (const auto& a : table.alarms()) {
    const auto& v = a.verdict();
    std::printf("%-32s %-22s %-9s %8llu %8.3f %8.3f %-24s %s\n", a.histogram().c_str(),
                StateName(a.state()).c_str(), SeverityName(a.severity()).c_str(),
                static_cast<unsigned long long>(a.run()), v.log_reduced_chi2(), v.threshold(),
                FormatTime(a.raised_unix_ns()).c_str(), a.user().c_str());
  }
  std::printf("%d alarms, last_sequence=%llu\n", table.alarms_size(),
              static_cast<unsigned long long>(table.last_sequence()));
}

int PrintReply(const dinamo::v1::Reply& r) {
  if (!r.ok()) {
    std::printf("refused: %s\n", r.error().empty() ? "(no reason given)" : r.error().c_str());
    return kExitRefused;
  }
  switch (r.result_case()) {
    case dinamo::v1::Reply::kStatus:
      PrintStatus(r.status());
      break;
    case dinamo::v1::Reply::kTemplate:
      PrintTemplate(r.template_());
      break;
    case dinamo::v1::Reply::kAlarms:
      PrintAlarmTable(r.alarms());
      break;
    case dinamo::v1::Reply::kAction:
      std::printf("ok affected=%u%s%s\n", r.action().affected(),
                  r.action().detail().empty() ? "" : " ", r.action().detail().c_str());
      break;
    default:
      std::printf("ok\n");
      break;
  }
  return kExitOk;
}

// Sends one command and waits for the reply; nothing (after a line on stderr) when none comes.
std::optional<dinamo::v1::Reply> Request(const Options& o, const dinamo::v1::Command& command) {
  zmq::context_t context;
  zmq::socket_t req(context, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  UseCurve(req, o);
  req.connect(o.control);
  std::string body;
  command.SerializeToString(&body);
  req.send(zmq::buffer(body), zmq::send_flags::none);

  std::vector<zmq::pollitem_t> items = {{req.handle(), 0, ZMQ_POLLIN, 0}};
  const auto timeout = std::chrono::milliseconds(static_cast<long>(o.timeout_s * 1000));
  if (zmq::poll(items, timeout) == 0) {
    std::fprintf(stderr,
                 "dinamo-console: no reply from %s within %g s (is dinamod running, with "
                 "control.bind on this endpoint?)\n",
                 o.control.c_str(), o.timeout_s);
    return std::nullopt;
  }
  zmq::message_t reply_frame;
  (void)req.recv(reply_frame, zmq::recv_flags::none);
  dinamo::v1::Reply reply;
  if (!reply.ParseFromArray(reply_frame.data(), static_cast<int>(reply_frame.size()))) {
    std::fprintf(stderr, "dinamo-console: the reply from %s is not a dinamo.v1.Reply\n",
                 o.control.c_str());
    return std::nullopt;
  }
  return reply;
}

int SendCommand(const Options& o) {
  const auto reply = Request(o, BuildCommand(o));
  return reply ? PrintReply(*reply) : kExitNoReply;
}

void AddOptions(CLI::App& app, Options& o) {
  app.add_option("--connect", o.connect, "the daemon's PUB endpoint")->capture_default_str();
  app.add_option("--control", o.control, "the daemon's control endpoint")->capture_default_str();
  app.add_option("--prefix", o.prefix, "only histograms whose name starts with this");
  app.add_flag("--verdicts", o.verdicts, "print one line per verdict too");
  app.add_flag("--summaries", o.summaries, "print one line per run summary");
  app.add_flag("--heartbeats", o.heartbeats, "print one line per heartbeat");
  app.add_option("--max-seconds", o.max_seconds, "stop following after this many seconds")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--exit-after", o.exit_after, "stop following after printing this many lines");

  auto* status = app.add_flag("--status", o.status, "print the daemon's status");
  auto* tmpl = app.add_option("--template", o.template_name, "print one histogram's template");
  auto* label = app.add_option("--label", o.label, "label a run: NAME RUN good|bad")
                    ->expected(3)
                    ->type_name("NAME RUN good|bad");
  app.add_flag("--whole-run", o.whole_run, "with --label: every histogram of the run")
      ->needs(label);
  auto* ack = app.add_option("--ack", o.ack, "acknowledge a histogram's alarm");
  auto* shelve = app.add_option("--shelve", o.shelve, "silence an alarm: NAME UNTIL_UNIX_S")
                     ->expected(2)
                     ->type_name("NAME UNTIL_UNIX_S");
  auto* rebaseline =
      app.add_option("--rebaseline", o.rebaseline, "reset the templates matching a glob");
  auto* alarms = app.add_flag("--alarms", o.alarms, "print the alarm table (with --prefix)");
  auto* unshelve = app.add_option("--unshelve", o.unshelve, "end a histogram's shelving");
  auto* disable = app.add_option("--disable", o.disable, "take a histogram's alarm out of service");
  auto* enable = app.add_option("--enable", o.enable, "put a disabled alarm back in service");
  const std::vector<CLI::Option*> commands = {status,     tmpl,   label,    ack,     shelve,
                                              rebaseline, alarms, unshelve, disable, enable};
  for (auto* a : commands) {
    for (auto* b : commands) {
      if (a != b) {
        a->excludes(b);
      }
    }
  }
  auto* server_key =
      app.add_option("--server-key", o.server_key, "the daemon's CurveZMQ public key (Z85)");
  auto* public_key = app.add_option("--public-key", o.public_key, "this console's public key");
  auto* secret_key = app.add_option("--secret-key", o.secret_key, "this console's secret key");
  server_key->needs(public_key)->needs(secret_key);
  public_key->needs(server_key);
  secret_key->needs(server_key);
  app.add_option("--user", o.user, "who sends the command (default $USER)");
  app.add_option("--comment", o.comment, "why, for the daemon's log");
  app.add_option("--timeout-s", o.timeout_s, "seconds to wait for the reply")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
}

}  // namespace

int main(int argc, char** argv) {
  GOOGLE_PROTOBUF_VERIFY_VERSION;
  Options o;
  CLI::App app{"Follow dinamod's alarms and verdicts, or send it one command"};
  app.footer("Exit codes: 0 done, 1 no reply or bus failure, 2 usage, 3 refused by the daemon");
  AddOptions(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  o.control_given = app.count("--control") > 0;

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  try {
    return WantsCommand(o) ? SendCommand(o) : Follow(o);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dinamo-console: %s\n", e.what());
    return kExitNoReply;
  }
}
