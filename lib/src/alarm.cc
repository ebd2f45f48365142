#include "dinamo/alarm.h"

#include <algorithm>

namespace dinamo {

std::string_view SeverityName(Severity s) {
  switch (s) {
    case Severity::kNone: return "NONE";
    case Severity::kMinor: return "MINOR";
    case Severity::kMajor: return "MAJOR";
    case Severity::kUndefined: return "UNDEFINED";
    case Severity::kInvalid: return "INVALID";
  }
  return "?";
}

std::string_view AlarmStateName(AlarmState s) {
  switch (s) {
    case AlarmState::kNormal: return "NORMAL";
    case AlarmState::kUnacknowledged: return "UNACKNOWLEDGED";
    case AlarmState::kAcknowledged: return "ACKNOWLEDGED";
    case AlarmState::kReturnedUnacknowledged: return "RETURNED_UNACKNOWLEDGED";
    case AlarmState::kShelved: return "SHELVED";
    case AlarmState::kDisabled: return "DISABLED";
  }
  return "?";
}

std::string_view AlarmEventName(AlarmEvent e) {
  switch (e) {
    case AlarmEvent::kNone: return "NONE";
    case AlarmEvent::kRaised: return "RAISED";
    case AlarmEvent::kCleared: return "CLEARED";
    case AlarmEvent::kAcknowledged: return "ACKNOWLEDGED";
    case AlarmEvent::kShelved: return "SHELVED";
    case AlarmEvent::kUnshelved: return "UNSHELVED";
    case AlarmEvent::kDisabled: return "DISABLED";
    case AlarmEvent::kEnabled: return "ENABLED";
    case AlarmEvent::kSeverityChanged: return "SEVERITY_CHANGED";
    case AlarmEvent::kRebaselined: return "REBASELINED";
  }
  return "?";
}

Severity SeverityOf(double log_reduced_chi2, double threshold, double warning_threshold) {
  if (log_reduced_chi2 > threshold) return Severity::kMajor;
  if (warning_threshold < threshold && log_reduced_chi2 > warning_threshold) {
    return Severity::kMinor;
  }
  return Severity::kNone;
}

bool IsActive(const AlarmRecord& alarm) {
  return alarm.state == AlarmState::kUnacknowledged || alarm.state == AlarmState::kAcknowledged;
}

namespace {

bool Silenced(const AlarmRecord& alarm) {
  return alarm.state == AlarmState::kShelved || alarm.state == AlarmState::kDisabled;
}

// The anomaly condition with its delays: true once on_delay anomalous verdicts came in a row,
// false again once off_delay normal ones did.
void UpdateCondition(AlarmRecord& alarm, bool anomalous, const AlarmSettings& settings) {
  if (anomalous) {
    alarm.consecutive_normal = 0;
    ++alarm.consecutive_anomalous;
    if (alarm.consecutive_anomalous >= std::max(settings.on_delay, 1u)) alarm.active = true;
  } else {
    alarm.consecutive_anomalous = 0;
    ++alarm.consecutive_normal;
    if (alarm.consecutive_normal >= std::max(settings.off_delay, 1u)) alarm.active = false;
  }
}

AlarmEvent Raise(AlarmRecord& alarm, Severity severity, std::int64_t now_unix_ns) {
  alarm.state = AlarmState::kUnacknowledged;
  alarm.severity = severity;
  alarm.raised_unix_ns = now_unix_ns;
  return AlarmEvent::kRaised;
}

AlarmEvent Clear(AlarmRecord& alarm) {
  // An alarm nobody acknowledged stays latched, so that a short episode is not missed.
  alarm.state = alarm.state == AlarmState::kUnacknowledged ? AlarmState::kReturnedUnacknowledged
                                                           : AlarmState::kNormal;
  if (alarm.state == AlarmState::kNormal) {
    alarm.severity = Severity::kNone;
    alarm.raised_unix_ns = 0;
  }
  return AlarmEvent::kCleared;
}

}  // namespace

AlarmEvent OnVerdict(AlarmRecord& alarm, Severity severity, std::uint64_t run,
                     std::int64_t now_unix_ns, const AlarmSettings& settings) {
  if (severity == Severity::kUndefined || severity == Severity::kInvalid) return AlarmEvent::kNone;

  const bool anomalous = severity == Severity::kMinor || severity == Severity::kMajor;
  UpdateCondition(alarm, anomalous, settings);

  AlarmEvent event = AlarmEvent::kNone;
  switch (alarm.state) {
    case AlarmState::kNormal:
    case AlarmState::kReturnedUnacknowledged:
      // A new episode; from a latched return it starts over as unacknowledged.
      if (alarm.active) event = Raise(alarm, severity, now_unix_ns);
      break;
    case AlarmState::kUnacknowledged:
    case AlarmState::kAcknowledged:
      if (!alarm.active) {
        event = Clear(alarm);
      } else if (anomalous && severity != alarm.severity) {
        alarm.severity = severity;
        event = AlarmEvent::kSeverityChanged;
      }
      break;
    case AlarmState::kShelved:
    case AlarmState::kDisabled:
      break;
  }
  if (event != AlarmEvent::kNone) alarm.run = run;
  return event;
}

AlarmEvent ExpireShelving(AlarmRecord& alarm, std::int64_t now_unix_ns) {
  if (alarm.state != AlarmState::kShelved) return AlarmEvent::kNone;
  if (now_unix_ns / 1'000'000'000 < alarm.shelved_until_unix_s) return AlarmEvent::kNone;
  Unshelve(alarm);
  return AlarmEvent::kUnshelved;
}

ActionResult Acknowledge(AlarmRecord& alarm) {
  switch (alarm.state) {
    case AlarmState::kUnacknowledged:
      alarm.state = AlarmState::kAcknowledged;
      return {AlarmEvent::kAcknowledged, std::nullopt};
    case AlarmState::kReturnedUnacknowledged:
      alarm.state = AlarmState::kNormal;
      alarm.severity = Severity::kNone;
      alarm.raised_unix_ns = 0;
      return {AlarmEvent::kAcknowledged, std::nullopt};
    case AlarmState::kAcknowledged:
      return {AlarmEvent::kNone, std::nullopt};  // idempotent
    default:
      return {AlarmEvent::kNone, "no alarm to acknowledge (state " +
                                     std::string(AlarmStateName(alarm.state)) + ")"};
  }
}

ActionResult Shelve(AlarmRecord& alarm, std::int64_t until_unix_s, std::int64_t now_unix_ns) {
  if (alarm.state == AlarmState::kDisabled) return {AlarmEvent::kNone, "alarm is disabled"};
  if (until_unix_s <= now_unix_ns / 1'000'000'000) {
    return {AlarmEvent::kNone,
            "shelve time " + std::to_string(until_unix_s) + " is not in the future"};
  }
  alarm.state = AlarmState::kShelved;
  alarm.severity = Severity::kNone;
  alarm.raised_unix_ns = 0;
  alarm.shelved_until_unix_s = until_unix_s;
  return {AlarmEvent::kShelved, std::nullopt};
}

ActionResult Unshelve(AlarmRecord& alarm) {
  if (alarm.state != AlarmState::kShelved) return {AlarmEvent::kNone, "alarm is not shelved"};
  // Back to normal; a condition that still holds raises again with the next verdict.
  alarm.state = AlarmState::kNormal;
  alarm.shelved_until_unix_s = 0;
  return {AlarmEvent::kUnshelved, std::nullopt};
}

ActionResult Disable(AlarmRecord& alarm) {
  if (alarm.state == AlarmState::kDisabled) return {AlarmEvent::kNone, std::nullopt};
  alarm.state = AlarmState::kDisabled;
  alarm.severity = Severity::kNone;
  alarm.raised_unix_ns = 0;
  alarm.shelved_until_unix_s = 0;
  return {AlarmEvent::kDisabled, std::nullopt};
}

ActionResult Enable(AlarmRecord& alarm) {
  if (alarm.state != AlarmState::kDisabled) return {AlarmEvent::kNone, "alarm is not disabled"};
  alarm.state = AlarmState::kNormal;
  return {AlarmEvent::kEnabled, std::nullopt};
}

ActionResult Rebaseline(AlarmRecord& alarm) {
  const AlarmState keep = Silenced(alarm) ? alarm.state : AlarmState::kNormal;
  const std::int64_t until = alarm.shelved_until_unix_s;
  alarm = AlarmRecord{};
  alarm.state = keep;
  alarm.shelved_until_unix_s = keep == AlarmState::kShelved ? until : 0;
  return {AlarmEvent::kRebaselined, std::nullopt};
}

}  // namespace dinamo
