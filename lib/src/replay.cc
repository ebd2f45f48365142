#include "dinamo/replay.h"

#include <algorithm>
#include <deque>
#include <stdexcept>

namespace dinamo {

std::uint64_t DebiasingSeed(std::uint64_t seed, std::size_t index) {
  // splitmix64 of (seed, index): cheap and well mixed.
  std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL * (static_cast<std::uint64_t>(index) + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<RunVerdict> Replay(const RunTable& table, TemplateModel& model,
                               const ReplayOptions& options, std::size_t count) {
  const std::size_t n = std::min(count, table.runs.size());
  std::vector<RunVerdict> verdicts;
  verdicts.reserve(n);

  Observation obs;
  Expectation expected;
  std::vector<double> pulls(model.bins());
  for (std::size_t i = 0; i < n; ++i) {
    const RunRecord& record = table.runs[i];
    Normalise(record.counts, obs);

    Score score;
    if (options.debiasing) {
      Debiasing d = *options.debiasing;
      d.seed = DebiasingSeed(d.seed, i);
      model.Expect(record.run, expected);
      score = ScoreDebiased(obs, expected, d, pulls);
    } else {
      score = model.ScoreRun(record.run, obs, pulls);
    }
    verdicts.push_back({record.run, record.label, score.chi2, score.log_reduced_chi2});

    if (record.label == Label::kGood) model.Learn(record.run, obs);
  }
  return verdicts;
}

std::vector<double> ReplayEwmaScores(const RunTable& table, double alpha, std::size_t count) {
  EwmaModel model(table.bins(), alpha);
  const auto verdicts = Replay(table, model, {}, count);
  std::vector<double> s(verdicts.size());
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = verdicts[i].log_reduced_chi2;
  return s;
}

namespace {

struct PendingLabel {
  std::size_t reveal_after;  // index of the run after whose scoring the label arrives
  std::int64_t run;
  Label label;
};

}  // namespace

ProtocolResult ReplayProtocol(const RunTable& table, std::unique_ptr<TemplateModel> model,
                              const ProtocolOptions& options) {
  ProtocolResult result;
  result.threshold = options.threshold;
  const std::size_t calibration = std::min(options.calibration_runs, table.runs.size());
  auto calibrate = [&] {
    if (!options.choose_threshold) return;
    const auto end = result.verdicts.begin() + static_cast<std::ptrdiff_t>(calibration);
    result.threshold = options.choose_threshold({result.verdicts.begin(), end});
  };

  if (options.labels == LabelPolicy::kOracle) {
    // Learning never depends on the threshold here, so it may be chosen afterwards.
    result.verdicts = Replay(table, *model, {options.debiasing});
    calibrate();
    return result;
  }
  if (options.debiasing) {
    throw std::invalid_argument("debiasing is supported with oracle labels only");
  }

  // The journal must still hold a run when its label arrives.
  JournalledTemplate tmpl(std::move(model), options.label_delay + 1);
  LearningPolicy policy;
  policy.auto_accept = AutoAccept::kBelowThreshold;
  policy.threshold = result.threshold;

  std::deque<PendingLabel> pending;
  Observation obs;
  std::vector<double> pulls(table.bins());
  result.verdicts.reserve(table.runs.size());
  for (std::size_t i = 0; i < table.runs.size(); ++i) {
    if (i == calibration) {
      calibrate();
      policy.threshold = result.threshold;
    }
    const RunRecord& record = table.runs[i];
    const bool calibrating = i < calibration;
    Normalise(record.counts, obs);

    const Label label = calibrating ? record.label : Label::kUnknown;
    const auto outcome = tmpl.ScoreFinal(record.run, record.counts, obs, label, policy, pulls);
    result.verdicts.push_back(
        {record.run, record.label, outcome.score.chi2, outcome.score.log_reduced_chi2});

    const bool asks_shifter = !calibrating && options.labels == LabelPolicy::kReview &&
                              outcome.score.Anomalous(policy.threshold) &&
                              record.label != Label::kUnknown;
    if (asks_shifter) pending.push_back({i + options.label_delay, record.run, record.label});

    while (!pending.empty() && pending.front().reveal_after <= i) {
      const auto refused = tmpl.SetLabel(pending.front().run, pending.front().label, policy);
      if (refused) throw std::logic_error("replay journal lost a run: " + *refused);
      ++result.labels_used;
      pending.pop_front();
    }
  }
  if (calibration == table.runs.size()) calibrate();
  return result;
}

}  // namespace dinamo
