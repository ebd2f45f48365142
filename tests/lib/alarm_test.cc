#include "dinamo/alarm.h"

#include <gtest/gtest.h>

#include <vector>

namespace dinamo {
namespace {

constexpr std::int64_t kSecond = 1'000'000'000;

// A scripted timeline: one verdict per step, the event each produced.
class AlarmTimeline : public ::testing::Test {
 protected:
  AlarmEvent Verdict(Severity s) {
    return OnVerdict(alarm_, s, ++run_, now_ += kSecond, settings_);
  }
  AlarmEvent Bad() { return Verdict(Severity::kMajor); }
  AlarmEvent Good() { return Verdict(Severity::kNone); }

  AlarmRecord alarm_;
  AlarmSettings settings_;
  std::uint64_t run_ = 0;
  std::int64_t now_ = 1000 * kSecond;
};

TEST_F(AlarmTimeline, AnomalousVerdictRaisesOnceUnacknowledged) {
  EXPECT_EQ(Bad(), AlarmEvent::kRaised);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(alarm_.state, AlarmState::kUnacknowledged);
  EXPECT_EQ(alarm_.run, 1u);
}

TEST_F(AlarmTimeline, AcknowledgedAlarmClearsToNormal) {
  Bad();
  EXPECT_EQ(Acknowledge(alarm_).event, AlarmEvent::kAcknowledged);
  EXPECT_EQ(alarm_.state, AlarmState::kAcknowledged);

  EXPECT_EQ(Good(), AlarmEvent::kCleared);
  EXPECT_EQ(alarm_.state, AlarmState::kNormal);
}

TEST_F(AlarmTimeline, UnacknowledgedReturnIsLatchedUntilAcknowledged) {
  Bad();
  EXPECT_EQ(Good(), AlarmEvent::kCleared);
  EXPECT_EQ(alarm_.state, AlarmState::kReturnedUnacknowledged);
  EXPECT_EQ(Good(), AlarmEvent::kNone);

  EXPECT_EQ(Acknowledge(alarm_).event, AlarmEvent::kAcknowledged);
  EXPECT_EQ(alarm_.state, AlarmState::kNormal);
}

TEST_F(AlarmTimeline, AnomalyDuringLatchedReturnRaisesAgain) {
  Bad();
  Good();
  EXPECT_EQ(Bad(), AlarmEvent::kRaised);
  EXPECT_EQ(alarm_.state, AlarmState::kUnacknowledged);
}

TEST_F(AlarmTimeline, OnDelayRaisesOnlyAfterConsecutiveAnomalies) {
  settings_.on_delay = 3;
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(Good(), AlarmEvent::kNone);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(Bad(), AlarmEvent::kRaised);
}

TEST_F(AlarmTimeline, ChatterAtThresholdRaisesOnceWithOffDelay) {
  settings_.off_delay = 3;
  int raised = 0;
  for (int i = 0; i < 10; ++i) {
    raised += Bad() == AlarmEvent::kRaised;
    raised += Good() == AlarmEvent::kRaised;
  }
  EXPECT_EQ(raised, 1);
  Good();
  Good();
  EXPECT_EQ(alarm_.state, AlarmState::kReturnedUnacknowledged);
}

TEST_F(AlarmTimeline, ShelvedAlarmIsSilentAndExpiresByItself) {
  Bad();
  const std::int64_t until = now_ / kSecond + 5;
  EXPECT_EQ(Shelve(alarm_, until, now_).event, AlarmEvent::kShelved);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(ExpireShelving(alarm_, now_), AlarmEvent::kNone);

  now_ = until * kSecond;
  EXPECT_EQ(ExpireShelving(alarm_, now_), AlarmEvent::kUnshelved);
  EXPECT_EQ(alarm_.state, AlarmState::kNormal);
  EXPECT_EQ(Bad(), AlarmEvent::kRaised);  // the condition still holds
}

TEST_F(AlarmTimeline, ShelveInThePastIsRefused) {
  const auto r = Shelve(alarm_, now_ / kSecond - 1, now_);
  EXPECT_TRUE(r.refused.has_value());
  EXPECT_EQ(alarm_.state, AlarmState::kNormal);
}

TEST_F(AlarmTimeline, DisabledAlarmNeverRaisesUntilEnabled) {
  EXPECT_EQ(Disable(alarm_).event, AlarmEvent::kDisabled);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);
  EXPECT_EQ(Bad(), AlarmEvent::kNone);

  EXPECT_EQ(Enable(alarm_).event, AlarmEvent::kEnabled);
  EXPECT_EQ(Bad(), AlarmEvent::kRaised);
}

TEST_F(AlarmTimeline, UndefinedVerdictsNeitherRaiseNorClear) {
  EXPECT_EQ(Verdict(Severity::kUndefined), AlarmEvent::kNone);
  Bad();
  EXPECT_EQ(Verdict(Severity::kUndefined), AlarmEvent::kNone);
  EXPECT_EQ(Verdict(Severity::kInvalid), AlarmEvent::kNone);
  EXPECT_EQ(alarm_.state, AlarmState::kUnacknowledged);
}

TEST_F(AlarmTimeline, EscalationFromMinorToMajorIsOneSeverityChange) {
  EXPECT_EQ(Verdict(Severity::kMinor), AlarmEvent::kRaised);
  EXPECT_EQ(Verdict(Severity::kMajor), AlarmEvent::kSeverityChanged);
  EXPECT_EQ(Verdict(Severity::kMajor), AlarmEvent::kNone);
  EXPECT_EQ(alarm_.severity, Severity::kMajor);
}

TEST_F(AlarmTimeline, AcknowledgeWithoutAlarmIsRefusedAndRepeatIsHarmless) {
  EXPECT_TRUE(Acknowledge(alarm_).refused.has_value());
  Bad();
  Acknowledge(alarm_);
  const auto again = Acknowledge(alarm_);
  EXPECT_FALSE(again.refused.has_value());
  EXPECT_EQ(again.event, AlarmEvent::kNone);
}

TEST_F(AlarmTimeline, RebaselineForgetsTheEpisodeButKeepsDisabled) {
  Bad();
  EXPECT_EQ(Rebaseline(alarm_).event, AlarmEvent::kRebaselined);
  EXPECT_EQ(alarm_.state, AlarmState::kNormal);
  EXPECT_FALSE(alarm_.active);

  Disable(alarm_);
  Rebaseline(alarm_);
  EXPECT_EQ(alarm_.state, AlarmState::kDisabled);
}

TEST(SeverityOf, WarningBandGivesMinorAndThresholdMajor) {
  EXPECT_EQ(SeverityOf(2.0, 1.5, 1.0), Severity::kMajor);
  EXPECT_EQ(SeverityOf(1.2, 1.5, 1.0), Severity::kMinor);
  EXPECT_EQ(SeverityOf(0.5, 1.5, 1.0), Severity::kNone);
  EXPECT_EQ(SeverityOf(1.2, 1.5, 1.5), Severity::kNone);  // no band when equal
}

}  // namespace
}  // namespace dinamo
