// Parity with the paper's reference implementation (tests/data, copied from the reference
// figures): every chi2 and, for the first 50 runs, every bin's template, uncertainty and pull.

#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "dinamo/replay.h"
#include "dinamo/run_table.h"
#include "dinamo/template_model.h"
#include "support/golden.h"

namespace dinamo {
namespace {

using testing::DataPath;
using testing::RelativeError;

constexpr double kParity = 1e-9;

class GoldenParity : public ::testing::TestWithParam<int> {
 protected:
  std::string Seed() const { return std::to_string(GetParam()); }
};

TEST_P(GoldenParity, EveryChi2MatchesReferenceAtAlphaHalf) {
  const RunTable table = ReadRunTable(DataPath("toy_" + Seed() + ".csv"));
  const auto golden = testing::ReadGoldenChi2("s_alpha0.5_" + Seed() + ".csv");
  EwmaModel model(table.bins(), 0.5);

  const auto verdicts = Replay(table, model, {});

  ASSERT_EQ(verdicts.size(), golden.size());
  double worst = 0.0;
  for (const auto& v : verdicts) worst = std::max(worst, RelativeError(v.chi2, golden.at(v.run)));
  EXPECT_LT(worst, kParity);
}

TEST_P(GoldenParity, TemplateUncertaintyAndPullsMatchReferenceForFirstRuns) {
  const RunTable table = ReadRunTable(DataPath("toy_" + Seed() + ".csv"));
  const auto golden = testing::ReadGoldenBins("s_alpha0.5_" + Seed() + "_bins.csv");
  EwmaModel model(table.bins(), 0.5);
  Observation obs;
  Expectation expected;
  std::vector<double> pulls(table.bins());

  double worst = 0.0;
  for (const auto& [run, bins] : golden) {
    const RunRecord& record = table.runs.at(static_cast<std::size_t>(run));
    Normalise(record.counts, obs);
    model.Expect(run, expected);
    model.ScoreRun(run, obs, pulls);
    for (std::size_t b = 0; b < bins.size(); ++b) {
      worst = std::max(worst, RelativeError(expected.mu[b], bins[b].mu));
      worst = std::max(worst, RelativeError(expected.sigma_mu[b], bins[b].sigma_mu));
      worst = std::max(worst, RelativeError(pulls[b], bins[b].pull));
    }
    if (record.label == Label::kGood) model.Learn(run, obs);
  }
  EXPECT_EQ(golden.size(), 50u);
  EXPECT_LT(worst, kParity);
}

INSTANTIATE_TEST_SUITE_P(Seeds, GoldenParity, ::testing::Values(0, 1));

}  // namespace
}  // namespace dinamo
