#include "config.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>
#include <zmq.h>

#include <fnmatch.h>

namespace dinamo::daemon {
namespace {

std::map<std::string, ModelFactory>& Factories() {
  static std::map<std::string, ModelFactory> factories;
  return factories;
}

// Reads typed values out of YAML nodes, throwing ConfigError with "file: key: problem".
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void Fail(const std::string& key, const std::string& problem) const {
    throw ConfigError(file_ + ": " + key + ": " + problem);
  }

  void RequireMap(const YAML::Node& node, const std::string& key) const {
    if (!node.IsMap()) {
      Fail(key, "must be a mapping of keys");
    }
  }

  // Refuses keys that are not in `known`: a typo must not silently fall back to a default.
  void OnlyKeys(const YAML::Node& node, const std::string& key,
                const std::set<std::string>& known) const {
    for (const auto& item : node) {
      const std::string name = item.first.as<std::string>();
      if (!known.contains(name)) {
        Fail(Join(key, name), "unknown key");
      }
    }
  }

  std::string String(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) {
      Fail(key, "must be a string");
    }
    return node.Scalar();
  }

  double Double(const YAML::Node& node, const std::string& key) const {
    if (!node.IsScalar()) {
      Fail(key, "must be a number");
    }
    double value = 0.0;
    if (!YAML::convert<double>::decode(node, value)) {
      Fail(key, "must be a number, got '" + node.Scalar() + "'");
    }
    return value;
  }

  double FiniteDouble(const YAML::Node& node, const std::string& key) const {
    const double value = Double(node, key);
    if (!std::isfinite(value)) {
      Fail(key, "must be finite, got " + node.Scalar());
    }
    return value;
  }

  std::uint64_t Unsigned(const YAML::Node& node, const std::string& key,
                         std::uint64_t max = std::numeric_limits<std::uint64_t>::max()) const {
    if (!node.IsScalar()) {
      Fail(key, "must be a non-negative integer");
    }
    const std::string& text = node.Scalar();
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) {
      Fail(key, "must be a non-negative integer, got '" + text + "'");
    }
    if (value > max) {
      Fail(key, "must be at most " + std::to_string(max) + ", got " + text);
    }
    return value;
  }

  std::vector<std::string> Strings(const YAML::Node& node, const std::string& key) const {
    std::vector<std::string> out;
    if (node.IsScalar()) {
      out.push_back(node.Scalar());
      return out;
    }
    if (!node.IsSequence()) {
      Fail(key, "must be a string or a list of strings");
    }
    for (std::size_t i = 0; i < node.size(); ++i) {
      out.push_back(String(node[i], key + "[" + std::to_string(i) + "]"));
    }
    return out;
  }

  static std::string Join(const std::string& a, const std::string& b) {
    return a.empty() ? b : a + "." + b;
  }

 private:
  std::string file_;
};

const std::set<std::string> kSettingKeys = {
    "method",      "alpha",        "threshold",   "warning_threshold", "warmup_runs",
    "auto_accept", "journal_runs", "min_entries", "on_delay",          "off_delay"};

std::string CheckedMethod(const Reader& r, const YAML::Node& node, const std::string& key) {
  const std::string method = r.String(node, key);
  if (method == "ewma" || FindModelFactory(method) != nullptr) {
    return method;
  }
  if (method == "transformer") {
    r.Fail(key, "method 'transformer' is not available in this build of dinamod");
  }
  r.Fail(key, "unknown method '" + method + "' (known: ewma)");
}

AutoAccept CheckedAutoAccept(const Reader& r, const YAML::Node& node, const std::string& key) {
  const std::string text = r.String(node, key);
  if (text == "below_threshold") {
    return AutoAccept::kBelowThreshold;
  }
  if (text == "never") {
    return AutoAccept::kNever;
  }
  if (text == "always") {
    return AutoAccept::kAlways;
  }
  r.Fail(key, "must be below_threshold, never or always, got '" + text + "'");
}

double CheckedAlpha(const Reader& r, const YAML::Node& node, const std::string& key) {
  const double alpha = r.Double(node, key);
  if (!(alpha >= 0.0 && alpha <= 1.0)) {
    r.Fail(key, "must be in [0, 1], got " + node.Scalar());
  }
  return alpha;
}

// Reads the setting keys of `defaults` or of one rule into `rule` (all optional there).
void ReadSettingKeys(const Reader& r, const YAML::Node& node, const std::string& key, Rule& rule) {
  for (const auto& item : node) {
    const std::string name = item.first.as<std::string>();
    const std::string path = Reader::Join(key, name);
    const YAML::Node& v = item.second;
    if (name == "method") {
      rule.method = CheckedMethod(r, v, path);
    } else if (name == "alpha") {
      rule.alpha = CheckedAlpha(r, v, path);
    } else if (name == "threshold") {
      rule.threshold = r.FiniteDouble(v, path);
    } else if (name == "warning_threshold") {
      rule.warning_threshold = r.FiniteDouble(v, path);
    } else if (name == "warmup_runs") {
      rule.warmup_runs = r.Unsigned(v, path, 1000000);
    } else if (name == "auto_accept") {
      rule.auto_accept = CheckedAutoAccept(r, v, path);
    } else if (name == "journal_runs") {
      rule.journal_runs = r.Unsigned(v, path, 100000);
    } else if (name == "min_entries") {
      rule.min_entries = r.FiniteDouble(v, path);
      if (*rule.min_entries < 0.0) {
        r.Fail(path, "must not be negative, got " + v.Scalar());
      }
    } else if (name == "on_delay" || name == "off_delay") {
      const auto runs = static_cast<std::uint32_t>(r.Unsigned(v, path, 1000));
      if (runs == 0) {
        r.Fail(path, "must be at least 1 run");
      }
      (name == "on_delay" ? rule.on_delay : rule.off_delay) = runs;
    }
  }
}

// A key the rule sets replaces the default; a key it leaves out keeps it.
template <typename T, typename U>
void OverlayKey(T& setting, const std::optional<U>& from_rule) {
  if (from_rule) {
    setting = *from_rule;
  }
}

void Overlay(const Rule& rule, HistogramSettings& s) {
  OverlayKey(s.method, rule.method);
  OverlayKey(s.alpha, rule.alpha);
  OverlayKey(s.threshold, rule.threshold);
  OverlayKey(s.warning_threshold, rule.warning_threshold);
  OverlayKey(s.warmup_runs, rule.warmup_runs);
  OverlayKey(s.auto_accept, rule.auto_accept);
  OverlayKey(s.journal_runs, rule.journal_runs);
  OverlayKey(s.min_entries, rule.min_entries);
  OverlayKey(s.on_delay, rule.on_delay);
  OverlayKey(s.off_delay, rule.off_delay);
}

void CheckWarning(const Reader& r, const HistogramSettings& s, const std::string& key) {
  if (s.warning_threshold && *s.warning_threshold > s.threshold) {
    r.Fail(key + ".warning_threshold",
           "must not exceed threshold (" + std::to_string(s.threshold) + ")");
  }
}

void ReadInput(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "input");
  r.OnlyKeys(node, "input", {"connect", "bind", "subscribe", "max_message_bytes", "receive_hwm"});
  if (node["connect"]) {
    c.input_connect = r.Strings(node["connect"], "input.connect");
  }
  if (node["bind"]) {
    c.input_bind = r.Strings(node["bind"], "input.bind");
  }
  if (node["subscribe"]) {
    c.input_subscribe = r.Strings(node["subscribe"], "input.subscribe");
  }
  if (node["max_message_bytes"]) {
    c.input_max_message_bytes =
        r.Unsigned(node["max_message_bytes"], "input.max_message_bytes", 1ull << 30);
    if (c.input_max_message_bytes < 64) {
      r.Fail("input.max_message_bytes", "must be at least 64");
    }
  }
  if (node["receive_hwm"]) {
    c.input_receive_hwm = static_cast<int>(
        r.Unsigned(node["receive_hwm"], "input.receive_hwm", std::numeric_limits<int>::max()));
  }
  for (std::size_t i = 0; i < c.input_connect.size(); ++i) {
    if (auto why = CheckEndpoint(c.input_connect[i], false)) {
      r.Fail("input.connect[" + std::to_string(i) + "]", *why);
    }
  }
  for (std::size_t i = 0; i < c.input_bind.size(); ++i) {
    if (auto why = CheckEndpoint(c.input_bind[i], true)) {
      r.Fail("input.bind[" + std::to_string(i) + "]", *why);
    }
  }
}

CurveConfig ReadCurve(const Reader& r, const YAML::Node& curve, const std::string& key);

void ReadOutput(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "output");
  r.OnlyKeys(node, "output", {"bind", "heartbeat_s", "send_hwm", "run_summary_after_s", "curve"});
  if (node["curve"] && !node["curve"].IsNull()) {
    c.output_curve = ReadCurve(r, node["curve"], "output.curve");
  }
  if (node["bind"]) {
    c.output_bind = r.String(node["bind"], "output.bind");
  }
  if (auto why = CheckEndpoint(c.output_bind, true)) {
    r.Fail("output.bind", *why);
  }
  if (node["heartbeat_s"]) {
    c.heartbeat_s = r.FiniteDouble(node["heartbeat_s"], "output.heartbeat_s");
    if (c.heartbeat_s < 0.1 || c.heartbeat_s > 3600.0) {
      r.Fail("output.heartbeat_s", "must be in [0.1, 3600] seconds");
    }
  }
  if (node["send_hwm"]) {
    c.output_send_hwm = static_cast<int>(
        r.Unsigned(node["send_hwm"], "output.send_hwm", std::numeric_limits<int>::max()));
  }
  if (node["run_summary_after_s"]) {
    c.run_summary_after_s =
        r.FiniteDouble(node["run_summary_after_s"], "output.run_summary_after_s");
    if (c.run_summary_after_s < 0.1 || c.run_summary_after_s > 86400.0) {
      r.Fail("output.run_summary_after_s", "must be in [0.1, 86400] seconds");
    }
  }
}

void CheckZ85Key(const Reader& r, const std::string& key, const std::string& value) {
  static const std::string kAlphabet =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  if (value.size() != 40) {
    r.Fail(key, "must be a Z85 key of 40 characters, got " + std::to_string(value.size()));
  }
  if (value.find_first_not_of(kAlphabet) != std::string::npos) {
    r.Fail(key, "is not Z85 text");
  }
}

// A CurveZMQ server's keys and the clients it admits, under `key` (control.curve, output.curve).
CurveConfig ReadCurve(const Reader& r, const YAML::Node& curve, const std::string& key) {
  r.RequireMap(curve, key);
  r.OnlyKeys(curve, key, {"server_public_key", "server_secret_key", "allowed_clients"});
  CurveConfig cc;
  for (const char* k : {"server_public_key", "server_secret_key"}) {
    const std::string path = key + "." + k;
    if (!curve[k]) {
      r.Fail(path, "missing");
    }
    const std::string value = r.String(curve[k], path);
    CheckZ85Key(r, path, value);
    (std::string_view(k) == "server_public_key" ? cc.server_public_key : cc.server_secret_key) =
        value;
  }
  // A public key that does not belong to the secret one makes every handshake fail silently.
  char derived[41] = {};
  if (zmq_curve_public(derived, cc.server_secret_key.c_str()) != 0) {
    r.Fail(key, "CURVE is not available in this libzmq");
  }
  if (cc.server_public_key != derived) {
    r.Fail(key + ".server_public_key", "does not belong to server_secret_key");
  }
  if (!curve["allowed_clients"]) {
    r.Fail(key + ".allowed_clients", "missing (list the clients' public keys)");
  }
  cc.allowed_clients = r.Strings(curve["allowed_clients"], key + ".allowed_clients");
  for (std::size_t i = 0; i < cc.allowed_clients.size(); ++i) {
    CheckZ85Key(r, key + ".allowed_clients[" + std::to_string(i) + "]", cc.allowed_clients[i]);
  }
  return cc;
}

// ipc, inproc and tcp on a loopback address.
bool IsLocalEndpoint(const std::string& endpoint) {
  const auto sep = endpoint.find("://");
  if (endpoint.compare(0, sep, "tcp") != 0) {
    return true;
  }
  std::string host = endpoint.substr(sep + 3, endpoint.rfind(':') - sep - 3);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

void ReadControl(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "control");
  r.OnlyKeys(node, "control", {"bind", "curve", "allow_remote"});
  if (node["bind"]) {
    c.control_bind = r.String(node["bind"], "control.bind");
  }
  if (auto why = CheckEndpoint(c.control_bind, true)) {
    r.Fail("control.bind", *why);
  }
  if (node["allow_remote"]) {
    if (!YAML::convert<bool>::decode(node["allow_remote"], c.control_allow_remote)) {
      r.Fail("control.allow_remote", "must be true or false");
    }
  }
  const YAML::Node curve = node["curve"];
  if (!curve || curve.IsNull()) {
    // Anyone who reaches the socket may label runs and silence alarms: off loopback only when
    // the configuration says so.
    if (!c.control_allow_remote && !IsLocalEndpoint(c.control_bind)) {
      r.Fail("control.bind",
             "'" + c.control_bind +
                 "' is not loopback and control.curve is not set; configure control.curve or "
                 "set control.allow_remote: true");
    }
    return;
  }
  c.control_curve = ReadCurve(r, curve, "control.curve");
}

void ReadHttp(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "http");
  r.OnlyKeys(node, "http", {"bind"});
  if (!node["bind"]) {
    return;
  }
  const std::string bind = r.String(node["bind"], "http.bind");
  const auto colon = bind.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    r.Fail("http.bind", "must be host:port, got '" + bind + "'");
  }
  std::string host = bind.substr(0, colon);
  const std::string port = bind.substr(colon + 1);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    r.Fail("http.bind", "port must be 1 to 65535, got '" + port + "'");
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") {
    host = "127.0.0.1";
  }
  if (host.find_first_not_of("0123456789abcdefABCDEF.:") != std::string::npos) {
    r.Fail("http.bind", "host must be an IP address or localhost, got '" + host + "'");
  }
  c.http_host = host;
  c.http_port = static_cast<std::uint16_t>(value);
}

void ReadState(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "state");
  r.OnlyKeys(node, "state", {"directory", "snapshot_interval_s"});
  if (node["directory"]) {
    c.state_directory = r.String(node["directory"], "state.directory");
    if (c.state_directory.empty()) {
      r.Fail("state.directory", "must not be empty");
    }
  }
  if (node["snapshot_interval_s"]) {
    c.snapshot_interval_s =
        r.FiniteDouble(node["snapshot_interval_s"], "state.snapshot_interval_s");
    if (c.snapshot_interval_s < 1.0) {
      r.Fail("state.snapshot_interval_s", "must be at least 1 second");
    }
  }
}

void ReadLog(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "log");
  r.OnlyKeys(node, "log", {"level"});
  if (!node["level"]) {
    return;
  }
  static const std::set<std::string> kLevels = {"trace", "debug",    "info", "warn",
                                                "error", "critical", "off"};
  c.log_level = r.String(node["level"], "log.level");
  if (!kLevels.contains(c.log_level)) {
    r.Fail("log.level",
           "must be trace, debug, info, warn, error, critical or off, got '" + c.log_level + "'");
  }
}

void ReadTraining(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "training");
  r.OnlyKeys(node, "training",
             {"workers", "queue_size", "threads_per_worker", "max_steps", "expect_ahead"});
  TrainingConfig& t = c.training;
  if (node["workers"]) {
    t.workers = static_cast<int>(r.Unsigned(node["workers"], "training.workers", 64));
  }
  if (node["queue_size"]) {
    t.queue_size = r.Unsigned(node["queue_size"], "training.queue_size", 1000000);
  }
  if (node["threads_per_worker"]) {
    t.threads_per_worker =
        static_cast<int>(r.Unsigned(node["threads_per_worker"], "training.threads_per_worker", 64));
  }
  if (node["max_steps"]) {
    t.max_steps = static_cast<int>(r.Unsigned(node["max_steps"], "training.max_steps", 1000));
  }
  if (node["expect_ahead"]) {
    t.expect_ahead =
        static_cast<int>(r.Unsigned(node["expect_ahead"], "training.expect_ahead", 100000));
  }
  if (t.workers == 0 || t.queue_size == 0 || t.threads_per_worker == 0 || t.max_steps == 0) {
    r.Fail("training", "workers, queue_size, threads_per_worker and max_steps must be at least 1");
  }
}

void ReadDefaults(const Reader& r, const YAML::Node& node, Config& c) {
  r.RequireMap(node, "defaults");
  r.OnlyKeys(node, "defaults", kSettingKeys);
  Rule rule;
  ReadSettingKeys(r, node, "defaults", rule);
  Overlay(rule, c.defaults);
  CheckWarning(r, c.defaults, "defaults");
}

void ReadRules(const Reader& r, const YAML::Node& node, Config& c) {
  if (!node.IsSequence()) {
    r.Fail("rules", "must be a list of {match: glob, ...}");
  }
  std::set<std::string> keys = kSettingKeys;
  keys.insert("match");
  for (std::size_t i = 0; i < node.size(); ++i) {
    const std::string key = "rules[" + std::to_string(i) + "]";
    r.RequireMap(node[i], key);
    r.OnlyKeys(node[i], key, keys);
    if (!node[i]["match"]) {
      r.Fail(key + ".match", "missing (a glob on the histogram name)");
    }
    Rule rule;
    rule.match = r.String(node[i]["match"], key + ".match");
    if (rule.match.empty()) {
      r.Fail(key + ".match", "must not be empty");
    }
    ReadSettingKeys(r, node[i], key, rule);
    HistogramSettings effective = c.defaults;
    Overlay(rule, effective);
    CheckWarning(r, effective, key);
    c.rules.push_back(std::move(rule));
  }
}

}  // namespace

std::string_view AutoAcceptName(AutoAccept policy) {
  switch (policy) {
    case AutoAccept::kBelowThreshold:
      return "below_threshold";
    case AutoAccept::kNever:
      return "never";
    case AutoAccept::kAlways:
      return "always";
  }
  return "?";
}

void RegisterModelFactory(const std::string& method, ModelFactory factory) {
  Factories()[method] = std::move(factory);
}

const ModelFactory* FindModelFactory(const std::string& method) {
  const auto it = Factories().find(method);
  return it == Factories().end() ? nullptr : &it->second;
}

Config ParseConfig(const std::string& text, const std::string& name) {
  const Reader r(name);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(name + ": not valid YAML: " + e.what());
  }
  Config c;
  c.file = name;
  if (root.IsNull()) {
    throw ConfigError(name + ": empty configuration");
  }
  r.RequireMap(root, "(top level)");
  r.OnlyKeys(
      root, "",
      {"input", "output", "control", "http", "state", "log", "defaults", "rules", "training"});
  try {
    // Defaults first: rules are checked against them.
    // An empty section ("log:" and nothing under it) means its defaults.
    const auto present = [&](const char* key) { return root[key] && !root[key].IsNull(); };
    if (present("defaults")) {
      ReadDefaults(r, root["defaults"], c);
    }
    if (present("input")) {
      ReadInput(r, root["input"], c);
    }
    if (present("output")) {
      ReadOutput(r, root["output"], c);
    }
    if (present("control")) {
      ReadControl(r, root["control"], c);
    }
    if (present("http")) {
      ReadHttp(r, root["http"], c);
    }
    if (present("state")) {
      ReadState(r, root["state"], c);
    }
    if (present("log")) {
      ReadLog(r, root["log"], c);
    }
    if (present("rules")) {
      ReadRules(r, root["rules"], c);
    }
    if (present("training")) {
      ReadTraining(r, root["training"], c);
    }
  } catch (const YAML::Exception& e) {
    throw ConfigError(name + ": " + e.what());
  }
  if (c.input_connect.empty() && c.input_bind.empty()) {
    r.Fail("input", "needs connect or bind (where the histograms come from)");
  }
  return c;
}

Config LoadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    throw ConfigError(path + ": cannot be read");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseConfig(text.str(), path);
}

HistogramSettings ResolveSettings(const Config& config, std::string_view histogram) {
  HistogramSettings s = config.defaults;
  const std::string name(histogram);
  for (const Rule& rule : config.rules) {
    if (fnmatch(rule.match.c_str(), name.c_str(), 0) == 0) {
      Overlay(rule, s);
      break;
    }
  }
  return s;
}

SettingsResolver::SettingsResolver(std::shared_ptr<const Config> config)
    : config_(std::move(config)) {}

const HistogramSettings& SettingsResolver::For(const std::string& histogram) {
  auto it = cache_.find(histogram);
  if (it == cache_.end()) {
    it = cache_.emplace(histogram, ResolveSettings(*config_, histogram)).first;
  }
  return it->second;
}

void SettingsResolver::Reset(std::shared_ptr<const Config> config) {
  config_ = std::move(config);
  cache_.clear();
}

std::optional<std::string> CheckEndpoint(std::string_view endpoint, bool for_bind) {
  const auto sep = endpoint.find("://");
  if (sep == std::string_view::npos) {
    return "not an endpoint (transport://address): '" + std::string(endpoint) + "'";
  }
  const std::string_view transport = endpoint.substr(0, sep);
  const std::string_view address = endpoint.substr(sep + 3);
  if (address.empty()) {
    return "endpoint has no address: '" + std::string(endpoint) + "'";
  }
  if (transport == "ipc" || transport == "inproc") {
    return std::nullopt;
  }
  if (transport != "tcp") {
    return "transport must be tcp, ipc or inproc: '" + std::string(endpoint) + "'";
  }
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return "tcp endpoint needs host:port: '" + std::string(endpoint) + "'";
  }
  const std::string_view host = address.substr(0, colon);
  const std::string_view port = address.substr(colon + 1);
  if (for_bind && port == "*") {
    return std::nullopt;
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
    return "tcp port must be 1 to 65535: '" + std::string(endpoint) + "'";
  }
  if (!for_bind && host == "*") {
    return "cannot connect to host '*': '" + std::string(endpoint) + "'";
  }
  return std::nullopt;
}

}  // namespace dinamo::daemon
