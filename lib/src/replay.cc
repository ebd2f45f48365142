#include "dinamo/replay.h"

#include <algorithm>

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

}  // namespace dinamo
