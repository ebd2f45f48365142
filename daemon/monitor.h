#pragma once

// The monitoring logic of dinamod without any socket: one template per histogram name, every
// message checked, scored, turned into a verdict and possibly an alarm change, and learned
// from as DESIGN.md section 4 says. The event loop feeds it frames and publishes what it returns.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dinamo/v1/control.pb.h"
#include "dinamo/v1/histogram.pb.h"
#include "dinamo/v1/state.pb.h"
#include "dinamo/v1/verdict.pb.h"

#include "config.h"
#include "dinamo/alarm.h"
#include "dinamo/journalled_template.h"
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

// An optional message that keeps its storage: reset() only marks it absent, and emplace()
// clears it for filling again, so that every message reuses the strings and repeated fields
// the last one allocated.
template <typename Message>
class Reused {
 public:
  Message& emplace() {
    value_.Clear();
    present_ = true;
    return value_;
  }
  void reset() { present_ = false; }
  bool has_value() const { return present_; }
  explicit operator bool() const { return present_; }
  Message& operator*() { return value_; }
  const Message& operator*() const { return value_; }
  Message* operator->() { return &value_; }
  const Message* operator->() const { return &value_; }

 private:
  Message value_;
  bool present_ = false;
};

// What one message produced, in publishing order: an alarm announcing a template reset, one
// announcing a shelving that expired, the verdict, an alarm state change, and the summary of a
// run whose finals are all in. Sequence numbers are left 0 for the publisher to assign.
struct MonitorResult {
  std::optional<Rejection> rejection;
  Reused<v1::Alarm> reset_alarm;
  Reused<v1::Alarm> unshelved_alarm;
  Reused<v1::Verdict> verdict;
  Reused<v1::Alarm> alarm;
  std::optional<v1::RunSummary> summary;

  // Marks everything absent, keeping the storage.
  void Reset();
};

// Who sent a control command and why: logged, and published with the alarm changes it makes.
struct Actor {
  std::string user;
  std::string host;
  std::string comment;
};

// What a control command did: refused with the reason, or how many histograms it changed, and
// the alarm messages to publish (in order).
struct CommandOutcome {
  std::optional<std::string> refused;
  std::uint32_t affected = 0;
  std::string detail;
  std::vector<v1::Alarm> alarms;
};

// The number of histograms a run summary names as the worst.
inline constexpr std::size_t kSummaryWorst = 5;

// The number of largest-|pull| bins a verdict carries.
inline constexpr std::size_t kVerdictPulls = 5;

class Monitor {
 public:
  // `settings` must outlive the monitor; call ConfigChanged() after resetting it.
  explicit Monitor(SettingsResolver& settings);
  ~Monitor();

  // One bus message (topic, body). Never throws for bad input: it is returned as a rejection
  // and no state changes. The result is the monitor's, valid until the next message (the hot
  // path allocates nothing for it).
  MonitorResult& OnMessage(std::span<const std::string_view> frames, std::int64_t now_unix_ns);
  // An already parsed histogram published under `topic`.
  MonitorResult& OnHistogram(std::string_view topic, const v1::Histogram& histogram,
                             std::int64_t now_unix_ns);

  // The configuration changed: settings are resolved again (a new alpha applies to the
  // templates from their next message; templates are kept).
  void ConfigChanged();

  // The current template of one histogram, or nothing when there is none.
  std::optional<v1::TemplateView> Template(const std::string& histogram) const;

  std::size_t templates() const { return tracks_.size(); }
  std::uint32_t alarms_active() const;

  // Called on the loop after a final run taught a template, or a late label changed whether a
  // run teaches it: the daemon schedules the background training of models that train (the
  // transformer).
  using LearnedHook = std::function<void(const std::string& histogram, TemplateModel& model)>;
  void set_learned_hook(LearnedHook hook) { learned_hook_ = std::move(hook); }

  // A shifter's label for a run of one histogram, or (whole_run) of every histogram whose
  // journal holds the run. Applied through the journal: an EWMA template becomes what it would
  // have been had the label come with the run; a transformer template changes that run's
  // decision only and relearns in the background (daemon/README.md "Late labels").
  CommandOutcome SetLabel(const v1::SetLabel& label, const Actor& who);

  // Alarm actions on one histogram (dinamo/alarm.h); `now_unix_ns` dates the change.
  CommandOutcome Acknowledge(const std::string& histogram, const Actor& who,
                             std::int64_t now_unix_ns);
  CommandOutcome Shelve(const std::string& histogram, std::int64_t until_unix_s, const Actor& who,
                        std::int64_t now_unix_ns);
  CommandOutcome Unshelve(const std::string& histogram, const Actor& who, std::int64_t now_unix_ns);
  CommandOutcome Disable(const std::string& histogram, const Actor& who, std::int64_t now_unix_ns);
  CommandOutcome Enable(const std::string& histogram, const Actor& who, std::int64_t now_unix_ns);
  // Resets every template whose name matches the glob to learn afresh.
  CommandOutcome Rebaseline(const std::string& pattern, const Actor& who, std::int64_t now_unix_ns);

  // Every alarm not in state NORMAL (shelved and disabled ones included) whose histogram name
  // starts with `prefix`, in name order. last_sequence is the publisher's to set.
  v1::AlarmTable Alarms(std::string_view prefix) const;

  // Ends the shelvings whose time has come; the UNSHELVED messages to publish.
  std::vector<v1::Alarm> ExpireShelving(std::int64_t now_unix_ns);

  // Logs how many alarm changes were left out of the log in a second that is over (the
  // daemon's housekeeping timer calls it).
  void FlushAlarmLog(std::int64_t now_unix_ns);

  // Summaries of the runs whose first final came at least `after_s` before `now_unix_ns`.
  std::vector<v1::RunSummary> DueSummaries(std::int64_t now_unix_ns, double after_s);

  // Every template, its run bookkeeping, journal and alarm state.
  void SaveTo(v1::Snapshot& snapshot) const;
  // Replaces the whole state with the snapshot's, or changes nothing and returns why not.
  std::optional<std::string> RestoreFrom(const v1::Snapshot& snapshot);

 private:
  struct Track;
  // The final verdicts of one run so far, for its summary.
  struct TallyEntry {
    Track* track = nullptr;
    double s = 0.0;
    v1::Severity severity = v1::SEVERITY_UNSPECIFIED;
  };
  struct RunTally {
    std::int64_t first_final_unix_ns = 0;
    std::vector<TallyEntry> histograms;  // one per histogram (Track::tallied_run)
    std::size_t expected_seen = 0;       // how many of the last summarised run's are in
  };

  // Checks the message; `known` is set to the histogram's track when there is one.
  std::optional<Rejection> Check(std::string_view topic, const v1::Histogram& h,
                                 Track*& known) const;
  Track& TrackFor(const v1::Histogram& h, Track* known, std::int64_t now_unix_ns,
                  MonitorResult& result);
  void ApplySettings(Track& track);
  void FillPulls(v1::Verdict& verdict, const TemplateModel& model, std::int64_t run) const;
  void UpdateAlarm(Track& track, const v1::Verdict& verdict, std::int64_t now_unix_ns,
                   Reused<v1::Alarm>& out);
  void FillAlarm(const Track& track, std::int64_t now_unix_ns, v1::Alarm& alarm) const;
  v1::Alarm AlarmMessage(const Track& track, std::int64_t now_unix_ns) const;
  // Whether an alarm change may be logged: at most kAlarmLinesPerSecond in one second; those
  // left out are counted, and the count logged by FlushAlarmLog.
  bool AlarmLineAllowed(std::int64_t now_unix_ns);
  using AlarmAction = ActionResult (*)(AlarmRecord&, std::int64_t, std::int64_t);
  CommandOutcome ApplyAlarmAction(const std::string& histogram, std::string_view what,
                                  AlarmAction action, std::int64_t until_unix_s, const Actor& who,
                                  std::int64_t now_unix_ns);
  std::optional<v1::RunSummary> Tally(Track& track, std::uint64_t run, double s,
                                      v1::Severity severity, std::int64_t now_unix_ns);
  v1::RunSummary Summarise(std::uint64_t run, const RunTally& tally, std::int64_t now_unix_ns);

  SettingsResolver& settings_;
  LearnedHook learned_hook_;
  std::uint64_t generation_ = 1;
  std::map<std::string, std::unique_ptr<Track>, std::less<>> tracks_;  // in name order
  // The same tracks by hash of the name (the keys view tracks_'s), for the per-message lookup.
  std::unordered_map<std::string_view, Track*> index_;

  // Runs whose summary is pending, the histograms of the last summarised run (whose finals
  // complete the next one; Track::in_previous_run), and the last run summarised (later finals
  // of it are not counted).
  std::map<std::uint64_t, RunTally> tallies_;
  std::vector<Track*> previous_run_;
  std::uint64_t last_summarised_run_ = 0;

  // Alarm lines logged in the current second, and those left out.
  std::int64_t alarm_log_second_ = 0;
  std::uint32_t alarm_lines_ = 0;
  std::uint64_t alarm_lines_skipped_ = 0;

  // Reused buffers of the hot path.
  MonitorResult result_;
  v1::Histogram parsed_;
  Observation obs_;
  std::vector<double> pulls_;
  mutable Expectation expected_;
};

// At most this many alarm changes are logged per second (every one is published on the bus);
// an alarm storm over thousands of histograms would otherwise be a log line per verdict.
inline constexpr std::uint32_t kAlarmLinesPerSecond = 100;

// How a method other than "ewma" is kept in snapshots, registered next to its factory: `save`
// writes the model's state into the histogram's state; `load` rebuilds it for `bins` bins, or
// returns null and says why in `error`.
struct ModelPersistence {
  std::function<void(const TemplateModel& model, v1::HistogramState& state)> save;
  std::function<std::unique_ptr<TemplateModel>(const v1::HistogramState& state, std::size_t bins,
                                               std::string& error)>
      load;
};
void RegisterModelPersistence(const std::string& method, ModelPersistence persistence);

// The rejection reasons the monitor uses, for metrics that show zero before anything happened.
std::span<const std::string_view> RejectionReasons();

}  // namespace dinamo::daemon
