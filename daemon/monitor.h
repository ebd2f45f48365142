#pragma once

// The monitoring logic of dinamod without any socket: one template per histogram name, every
// message checked, scored, turned into a verdict and possibly an alarm change, and learned
// from as DESIGN.md section 4 says. The event loop feeds it frames and publishes what it returns.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dinamo/v1/control.pb.h"
#include "dinamo/v1/histogram.pb.h"
#include "dinamo/v1/state.pb.h"
#include "dinamo/v1/verdict.pb.h"

#include "config.h"
#include "dinamo/observation.h"
#include "dinamo/template_model.h"

namespace dinamo::daemon {

// Why a message was refused: `reason` is the metric label (stable, snake_case), `detail` says
// what exactly was wrong, `histogram` the name it claimed (may be empty or the topic).
struct Rejection {
  std::string reason;
  std::string detail;
  std::string histogram;
};

// What one message produced, in publishing order: an alarm announcing a template reset, the
// verdict, an alarm state change. Sequence numbers are left 0 for the publisher to assign.
struct MonitorResult {
  std::optional<Rejection> rejection;
  std::optional<v1::Alarm> reset_alarm;
  std::optional<v1::Verdict> verdict;
  std::optional<v1::Alarm> alarm;
};

// The number of largest-|pull| bins a verdict carries.
inline constexpr std::size_t kVerdictPulls = 5;

class Monitor {
 public:
  // `settings` must outlive the monitor; call ConfigChanged() after resetting it.
  explicit Monitor(SettingsResolver& settings);
  ~Monitor();

  // One bus message (topic, body). Never throws for bad input: it is returned as a rejection
  // and no state changes.
  MonitorResult OnMessage(std::span<const std::string_view> frames, std::int64_t now_unix_ns);
  // An already parsed histogram published under `topic`.
  MonitorResult OnHistogram(std::string_view topic, const v1::Histogram& histogram,
                            std::int64_t now_unix_ns);

  // The configuration changed: settings are resolved again (a new alpha applies to the
  // templates from their next message; templates are kept).
  void ConfigChanged();

  // The current template of one histogram, or nothing when there is none.
  std::optional<v1::TemplateView> Template(const std::string& histogram) const;

  std::size_t templates() const { return tracks_.size(); }
  std::uint32_t alarms_active() const;

  // Every template, its run bookkeeping and alarm state.
  void SaveTo(v1::Snapshot& snapshot) const;
  // Replaces the whole state with the snapshot's, or changes nothing and returns why not.
  std::optional<std::string> RestoreFrom(const v1::Snapshot& snapshot);

 private:
  struct Track;

  std::optional<Rejection> Check(std::string_view topic, const v1::Histogram& h) const;
  Track& TrackFor(const v1::Histogram& h, std::int64_t now_unix_ns, MonitorResult& result);
  void ApplySettings(Track& track);
  bool ShouldLearn(const v1::Histogram& h, const HistogramSettings& s, bool warmup, bool judgeable,
                   bool anomalous) const;
  void FillPulls(v1::Verdict& verdict, const Expectation& expected) const;
  std::optional<v1::Alarm> UpdateAlarm(Track& track, const v1::Verdict& verdict,
                                       std::int64_t now_unix_ns) const;

  SettingsResolver& settings_;
  std::uint64_t generation_ = 1;
  std::map<std::string, std::unique_ptr<Track>, std::less<>> tracks_;

  // Reused buffers of the hot path.
  v1::Histogram parsed_;
  Observation obs_;
  std::vector<double> pulls_;
  mutable Expectation expected_;
};

// The rejection reasons the monitor uses, for metrics that show zero before anything happened.
std::span<const std::string_view> RejectionReasons();

}  // namespace dinamo::daemon
