#pragma once

// The life of one histogram's alarm, after the ISA-18.2 alarm states: raised, acknowledged,
// returned (latched until acknowledged), shelved for a while, disabled. Pure state: the daemon
// feeds it verdicts and shifters' commands, and publishes the events it returns.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace dinamo {

enum class Severity : std::uint8_t {
  kNone,       // scored, within the thresholds
  kMinor,      // above the warning threshold
  kMajor,      // above the threshold
  kUndefined,  // cannot tell: warm-up, too few entries
  kInvalid,    // the input was refused
};

enum class AlarmState : std::uint8_t {
  kNormal,
  kUnacknowledged,          // raised, nobody has acknowledged it yet
  kAcknowledged,            // still anomalous, a shifter has seen it
  kReturnedUnacknowledged,  // back to normal, latched until acknowledged
  kShelved,                 // silenced until shelved_until_unix_s
  kDisabled,                // out of service until enabled
};

enum class AlarmEvent : std::uint8_t {
  kNone,
  kRaised,
  kCleared,
  kAcknowledged,
  kShelved,
  kUnshelved,
  kDisabled,
  kEnabled,
  kSeverityChanged,
  kRebaselined,
};

std::string_view SeverityName(Severity s);
std::string_view AlarmStateName(AlarmState s);
std::string_view AlarmEventName(AlarmEvent e);

// The severity of a score: MAJOR above `threshold`, MINOR above `warning_threshold` (when it is
// below `threshold`), NONE otherwise.
Severity SeverityOf(double log_reduced_chi2, double threshold, double warning_threshold);

struct AlarmSettings {
  // Raise only after this many consecutive anomalous verdicts (at least 1).
  std::uint32_t on_delay = 1;
  // Chatter suppression: the condition counts as gone only after this many consecutive
  // normal verdicts (at least 1), so a histogram hovering at the threshold raises once.
  std::uint32_t off_delay = 1;
};

// Persisted with the template (snapshots), so acknowledgements survive restarts.
struct AlarmRecord {
  AlarmState state = AlarmState::kNormal;
  Severity severity = Severity::kNone;  // of the current episode; kNone when there is none
  bool active = false;                  // the anomaly condition holds (after the delays)
  std::uint32_t consecutive_anomalous = 0;
  std::uint32_t consecutive_normal = 0;
  std::uint64_t run = 0;                // of the verdict behind the last change
  std::int64_t raised_unix_ns = 0;      // start of the current episode; 0 when none
  std::int64_t shelved_until_unix_s = 0;

  bool operator==(const AlarmRecord&) const = default;
};

// Feeds one verdict. kUndefined and kInvalid verdicts neither raise nor clear. Returns what
// changed (kNone when nothing did).
AlarmEvent OnVerdict(AlarmRecord& alarm, Severity severity, std::uint64_t run,
                     std::int64_t now_unix_ns, const AlarmSettings& settings);

// Ends a shelving whose time has come; returns kUnshelved if it did.
AlarmEvent ExpireShelving(AlarmRecord& alarm, std::int64_t now_unix_ns);

// Shifter actions. Each returns the event, or why the action does not apply in this state
// (the record is then unchanged).
struct ActionResult {
  AlarmEvent event = AlarmEvent::kNone;
  std::optional<std::string> refused;
};
ActionResult Acknowledge(AlarmRecord& alarm);
ActionResult Shelve(AlarmRecord& alarm, std::int64_t until_unix_s, std::int64_t now_unix_ns);
ActionResult Unshelve(AlarmRecord& alarm);
ActionResult Disable(AlarmRecord& alarm);
ActionResult Enable(AlarmRecord& alarm);
// The template was reset: whatever the alarm said about the old one no longer holds.
ActionResult Rebaseline(AlarmRecord& alarm);

// True while the alarm asks for a shifter's attention (unacknowledged or acknowledged).
bool IsActive(const AlarmRecord& alarm);

}  // namespace dinamo
