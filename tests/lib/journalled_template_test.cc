#include "dinamo/journalled_template.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "dinamo/replay.h"
#include "dinamo/run_table.h"
#include "support/golden.h"

namespace dinamo {
namespace {

constexpr std::size_t kBins = 100;

const EwmaState& StateOf(const JournalledTemplate& t) {
  return static_cast<const EwmaModel&>(t.model()).state();
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    table_ = ReadRunTable(testing::DataPath("toy_0.csv"));
    table_.runs.resize(300);
  }

  JournalledTemplate Fresh(std::size_t journal_runs) const {
    return JournalledTemplate(std::make_unique<EwmaModel>(kBins, 0.5), journal_runs);
  }

  // Feeds run i with the label it is given now (kUnknown when it will come later).
  void Feed(JournalledTemplate& t, std::size_t i, Label label, const LearningPolicy& p) {
    const RunRecord& r = table_.runs[i];
    Normalise(r.counts, obs_);
    pulls_.resize(obs_.bins());
    t.ScoreFinal(r.run, r.counts, obs_, label, p, pulls_);
  }

  RunTable table_;
  Observation obs_;
  std::vector<double> pulls_;
};

TEST_F(JournalTest, OnTimeLabelsEqualPaperReplay) {
  LearningPolicy never;
  never.auto_accept = AutoAccept::kNever;
  JournalledTemplate t = Fresh(32);
  EwmaModel reference(kBins, 0.5);

  for (std::size_t i = 0; i < table_.runs.size(); ++i) Feed(t, i, table_.runs[i].label, never);
  Replay(table_, reference, {});

  EXPECT_EQ(StateOf(t), reference.state());
}

// Property: whatever the order and delay of the labels, as long as each arrives while its run
// is in the journal, the template ends bit for bit where on-time labels put it.
TEST_F(JournalTest, LateLabelsInAnyOrderGiveTheOnTimeTemplateBitForBit) {
  constexpr std::size_t kJournal = 32;
  for (const AutoAccept mode : {AutoAccept::kNever, AutoAccept::kBelowThreshold}) {
    LearningPolicy policy;
    policy.auto_accept = mode;
    JournalledTemplate on_time = Fresh(kJournal);
    for (std::size_t i = 0; i < table_.runs.size(); ++i) {
      Feed(on_time, i, table_.runs[i].label, policy);
    }

    for (std::uint64_t seed = 1; seed <= 5; ++seed) {
      std::mt19937_64 rng(seed);
      std::uniform_int_distribution<std::size_t> delay(0, kJournal - 1);
      JournalledTemplate late = Fresh(kJournal);
      std::vector<std::pair<std::size_t, std::size_t>> due;  // (arrives after run, run index)
      for (std::size_t i = 0; i < table_.runs.size(); ++i) {
        Feed(late, i, Label::kUnknown, policy);
        due.push_back({i + delay(rng), i});
        std::shuffle(due.begin(), due.end(), rng);
        for (auto it = due.begin(); it != due.end();) {
          if (it->first > i && i + 1 < table_.runs.size()) {
            ++it;
            continue;
          }
          const RunRecord& r = table_.runs[it->second];
          if (r.label != Label::kUnknown) {
            ASSERT_FALSE(late.SetLabel(r.run, r.label, policy).has_value());
          }
          it = due.erase(it);
        }
      }
      EXPECT_EQ(StateOf(late), StateOf(on_time)) << "seed " << seed;
    }
  }
}

TEST_F(JournalTest, LabelOlderThanJournalIsRefusedWithReason) {
  LearningPolicy policy;
  JournalledTemplate t = Fresh(4);
  for (std::size_t i = 0; i < 10; ++i) Feed(t, i, Label::kUnknown, policy);
  const EwmaState before = StateOf(t);

  const auto refused = t.SetLabel(table_.runs[2].run, Label::kGood, policy);

  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->find("older than the journal"), std::string::npos) << *refused;
  EXPECT_EQ(StateOf(t), before);
}

TEST_F(JournalTest, LabelForRunNeverSeenIsRefused) {
  LearningPolicy policy;
  JournalledTemplate t = Fresh(8);
  Feed(t, 0, Label::kUnknown, policy);
  Feed(t, 2, Label::kUnknown, policy);

  const auto refused = t.SetLabel(table_.runs[1].run, Label::kGood, policy);

  ASSERT_TRUE(refused.has_value());
  EXPECT_NE(refused->find("never seen"), std::string::npos) << *refused;
}

TEST_F(JournalTest, RepeatedLabelIsIdempotentAndContradictingLabelWins) {
  LearningPolicy never;
  never.auto_accept = AutoAccept::kNever;
  JournalledTemplate t = Fresh(8);
  for (std::size_t i = 0; i < 5; ++i) Feed(t, i, Label::kUnknown, never);
  const std::int64_t run = table_.runs[3].run;

  ASSERT_FALSE(t.SetLabel(run, Label::kGood, never).has_value());
  const EwmaState once = StateOf(t);
  ASSERT_FALSE(t.SetLabel(run, Label::kGood, never).has_value());
  EXPECT_EQ(StateOf(t), once);
  EXPECT_EQ(StateOf(t).learned_runs, 1u);

  ASSERT_FALSE(t.SetLabel(run, Label::kBad, never).has_value());
  EXPECT_EQ(StateOf(t).learned_runs, 0u);
}

TEST_F(JournalTest, UnknownLabelIsRefused) {
  LearningPolicy policy;
  JournalledTemplate t = Fresh(8);
  Feed(t, 0, Label::kUnknown, policy);

  EXPECT_TRUE(t.SetLabel(table_.runs[0].run, Label::kUnknown, policy).has_value());
}

TEST_F(JournalTest, CopyIsIndependentOfTheOriginal) {
  LearningPolicy never;
  never.auto_accept = AutoAccept::kNever;
  JournalledTemplate a = Fresh(8);
  Feed(a, 0, Label::kUnknown, never);
  JournalledTemplate b = a;

  ASSERT_FALSE(b.SetLabel(table_.runs[0].run, Label::kGood, never).has_value());

  EXPECT_EQ(StateOf(a).learned_runs, 0u);
  EXPECT_EQ(StateOf(b).learned_runs, 1u);
}

// A model that relearns instead of replaying: it records what it is told, and refuses on demand.
class RelearningModel final : public TemplateModel {
 public:
  struct Call {
    std::int64_t changed = 0;
    std::vector<bool> decisions;
  };

  explicit RelearningModel(std::vector<Call>& calls, bool refuse = false)
      : calls_(calls), refuse_(refuse) {}

  std::string_view method() const override { return "relearning"; }
  std::size_t bins() const override { return kBins; }
  void Expect(std::int64_t, Expectation& out) const override {
    out.mu.assign(kBins, 1.0 / kBins);
    out.sigma_mu.assign(kBins, 1e-3);
    out.integral = 0.0;
  }
  bool Learn(std::int64_t, const Observation&) override {
    ++learned_;
    return true;
  }
  std::uint64_t learned_runs() const override { return learned_; }
  std::unique_ptr<TemplateModel> Clone() const override {
    return std::make_unique<RelearningModel>(*this);
  }
  bool ReplaysJournal() const override { return false; }
  std::optional<std::string> Relearn(std::span<const JournalledRun> journal,
                                     std::int64_t changed) override {
    Call call{changed, {}};
    for (const JournalledRun& r : journal) call.decisions.push_back(r.learned);
    calls_.push_back(std::move(call));
    if (refuse_) return "refused by the model";
    return std::nullopt;
  }

 private:
  std::vector<Call>& calls_;
  bool refuse_;
  std::uint64_t learned_ = 0;
};

TEST_F(JournalTest, ModelThatDoesNotReplayRelearnsOnlyTheRelabelledRun) {
  LearningPolicy always;
  always.auto_accept = AutoAccept::kAlways;
  std::vector<RelearningModel::Call> calls;
  JournalledTemplate t(std::make_unique<RelearningModel>(calls), 8);
  for (std::size_t i = 0; i < 5; ++i) Feed(t, i, Label::kUnknown, always);
  EXPECT_EQ(t.base(), nullptr);  // no base state to replay from

  ASSERT_FALSE(t.SetLabel(table_.runs[2].run, Label::kBad, always).has_value());

  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].changed, table_.runs[2].run);
  EXPECT_EQ(calls[0].decisions, (std::vector<bool>{true, true, false, true, true}));
  EXPECT_EQ(t.journal()[2].label, Label::kBad);
  EXPECT_EQ(t.model().learned_runs(), 5u);  // nothing was scored or learned again

  // A label that confirms the decision tells the model nothing.
  ASSERT_FALSE(t.SetLabel(table_.runs[3].run, Label::kGood, always).has_value());
  EXPECT_EQ(calls.size(), 1u);
}

TEST_F(JournalTest, RefusedRelearnLeavesLabelAndDecisionAsTheyWere) {
  LearningPolicy always;
  always.auto_accept = AutoAccept::kAlways;
  std::vector<RelearningModel::Call> calls;
  JournalledTemplate t(std::make_unique<RelearningModel>(calls, true), 8);
  for (std::size_t i = 0; i < 3; ++i) Feed(t, i, Label::kUnknown, always);

  const auto refused = t.SetLabel(table_.runs[1].run, Label::kBad, always);

  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(*refused, "refused by the model");
  EXPECT_EQ(t.journal()[1].label, Label::kUnknown);
  EXPECT_TRUE(t.journal()[1].learned);
}

TEST_F(JournalTest, EwmaDoesNotRelearn) {
  EwmaModel ewma(kBins, 0.5);
  EXPECT_TRUE(ewma.ReplaysJournal());
  EXPECT_TRUE(ewma.Relearn({}, 1).has_value());
}

TEST(Accepts, WarmUpAcceptsUnlabelledRunsUnderBelowThreshold) {
  LearningPolicy p;
  p.warmup_runs = 3;
  p.threshold = 1.0;
  const Score anomalous{1000.0, 5.0};

  EXPECT_TRUE(Accepts(p, Label::kUnknown, anomalous, 500, 2));
  EXPECT_FALSE(Accepts(p, Label::kUnknown, anomalous, 500, 3));
  EXPECT_FALSE(Accepts(p, Label::kBad, Score{}, 500, 0));
}

TEST(Accepts, TooFewEntriesNeverTeachEvenWhenLabelledGood) {
  LearningPolicy p;
  p.min_entries = 100;

  EXPECT_FALSE(Accepts(p, Label::kGood, Score{}, 99, 10));
  EXPECT_TRUE(Accepts(p, Label::kGood, Score{}, 100, 10));
}

TEST(ReplayProtocol, ReviewWithoutDelayAsksOnlyAboutAnomalousRuns) {
  RunTable table = ReadRunTable(testing::DataPath("toy_1.csv"));
  table.runs.resize(1500);
  ProtocolOptions review;
  review.labels = LabelPolicy::kReview;
  review.calibration_runs = 1000;
  review.threshold = 1.0;

  const auto r = ReplayProtocol(table, std::make_unique<EwmaModel>(kBins, 0.5), review);

  std::size_t anomalous = 0;
  for (std::size_t i = 1000; i < r.verdicts.size(); ++i) {
    anomalous += r.verdicts[i].log_reduced_chi2 > 1.0;
  }
  EXPECT_EQ(r.labels_used, anomalous);
  EXPECT_GT(r.labels_used, 0u);
  EXPECT_LT(r.labels_used, 500u / 4);
}

}  // namespace
}  // namespace dinamo
