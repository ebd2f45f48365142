#pragma once

// dinamod's configuration (DESIGN.md section 6): parsed and validated from YAML at start and on
// SIGHUP, and the per-histogram settings resolved from `defaults` and the ordered glob `rules`.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dinamo/journalled_template.h"
#include "dinamo/template_model.h"

namespace dinamo::daemon {

// A problem in a configuration file, naming the file and the key:
// "dinamod.yaml: defaults.alpha: must be in [0, 1], got 1.5".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The learning policy of the library (journalled_template.h), so that the daemon and the replay
// tool decide alike.
using AutoAccept = dinamo::AutoAccept;

std::string_view AutoAcceptName(AutoAccept policy);

// What one histogram is monitored with: `defaults` overlaid with the first matching rule.
struct HistogramSettings {
  std::string method = "ewma";
  double alpha = 0.5;
  double threshold = 1.0;
  // Severity MINOR above this (and not above threshold); unset: no MINOR severity.
  std::optional<double> warning_threshold;
  std::uint64_t warmup_runs = 10;
  AutoAccept auto_accept = AutoAccept::kBelowThreshold;
  std::uint64_t journal_runs = 100;
  double min_entries = 0.0;
  // Alarm delays (dinamo::AlarmSettings): raise after on_delay anomalous verdicts in a row,
  // clear after off_delay normal ones (chatter suppression).
  std::uint32_t on_delay = 1;
  std::uint32_t off_delay = 1;

  bool operator==(const HistogramSettings&) const = default;
};

// One entry of `rules`: the glob and the keys it sets (unset keys come from `defaults`).
struct Rule {
  std::string match;
  std::optional<std::string> method;
  std::optional<double> alpha;
  std::optional<double> threshold;
  std::optional<double> warning_threshold;
  std::optional<std::uint64_t> warmup_runs;
  std::optional<AutoAccept> auto_accept;
  std::optional<std::uint64_t> journal_runs;
  std::optional<double> min_entries;
  std::optional<std::uint32_t> on_delay;
  std::optional<std::uint32_t> off_delay;
};

struct CurveConfig {
  std::string server_public_key;  // Z85, 40 characters
  std::string server_secret_key;
  std::vector<std::string> allowed_clients;
  bool operator==(const CurveConfig&) const = default;
};

// Background training of the transformer templates (`training:`, daemon/README.md).
struct TrainingConfig {
  int workers = 1;
  std::size_t queue_size = 64;
  int threads_per_worker = 1;  // libtorch intra-op threads (process-wide)
  int max_steps = 1000;        // per training of one histogram (early stopping comes first)
  int expect_ahead = 64;       // runs whose template the worker computes after a training
  bool operator==(const TrainingConfig&) const = default;
};

struct Config {
  std::string file;  // where it was read from, for messages

  std::vector<std::string> input_connect;
  std::vector<std::string> input_bind;
  std::vector<std::string> input_subscribe;  // empty: everything
  std::size_t input_max_message_bytes = 16u << 20;
  int input_receive_hwm = 100000;

  std::string output_bind = "tcp://127.0.0.1:5551";
  double heartbeat_s = 5.0;
  int output_send_hwm = 100000;
  // A run's summary is published once every histogram of the previous run sent its final for
  // it, or this long after its first final.
  double run_summary_after_s = 30.0;
  // CurveZMQ on the PUB socket: only the listed subscribers receive anything.
  std::optional<CurveConfig> output_curve;

  std::string control_bind = "tcp://127.0.0.1:5552";
  std::optional<CurveConfig> control_curve;
  // Without curve, a control endpoint other than loopback needs this set.
  bool control_allow_remote = false;

  std::string http_host = "127.0.0.1";
  std::uint16_t http_port = 8080;

  std::string state_directory = "./state";
  double snapshot_interval_s = 300.0;

  std::string log_level = "info";

  HistogramSettings defaults;
  std::vector<Rule> rules;

  TrainingConfig training;
};

// Builds a template for `bins` bins with `settings`. The daemon knows "ewma"; other methods
// (the transformer) register a factory before the configuration is read.
using ModelFactory =
    std::function<std::unique_ptr<TemplateModel>(std::size_t bins, const HistogramSettings&)>;

void RegisterModelFactory(const std::string& method, ModelFactory factory);
// The factory for `method`, or null when none is registered.
const ModelFactory* FindModelFactory(const std::string& method);

// Reads and validates a whole file; throws ConfigError naming the file and the key.
Config LoadConfig(const std::string& path);
// The same for YAML text; `name` stands for the file in messages.
Config ParseConfig(const std::string& text, const std::string& name);

// The settings of one histogram: defaults overlaid with the first rule whose glob matches.
HistogramSettings ResolveSettings(const Config& config, std::string_view histogram);

// ResolveSettings with a cache per histogram name; Reset() when the configuration changes.
class SettingsResolver {
 public:
  explicit SettingsResolver(std::shared_ptr<const Config> config);

  // The reference stays valid until Reset().
  const HistogramSettings& For(const std::string& histogram);
  void Reset(std::shared_ptr<const Config> config);
  const Config& config() const { return *config_; }

 private:
  std::shared_ptr<const Config> config_;
  std::unordered_map<std::string, HistogramSettings> cache_;
};

// Checks a ZeroMQ endpoint ("tcp://host:port", "ipc://path", "inproc://name"); the reason when
// it cannot be used. `for_bind` allows "*" as the host or port.
std::optional<std::string> CheckEndpoint(std::string_view endpoint, bool for_bind);

}  // namespace dinamo::daemon
