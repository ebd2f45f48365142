#include "dinamo/toy_model.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <numeric>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include <gtest/gtest.h>

#include "dinamo/run_table.h"

namespace dinamo {
namespace {

double Integral(const RunRecord& r) {
  return std::accumulate(r.counts.begin(), r.counts.end(), 0.0);
}

// The slow drift of the mean at run t, as DESIGN.md section 7 gives it.
double Drift(std::int64_t t) {
  return 0.5 * std::sin(std::numbers::pi * static_cast<double>(t) / 500.0);
}

// A Gaussian with nothing on top: no drift, jumps, anomalies or distortion.
ToyModelConfig PlainGaussian(ToyModelConfig::Sampling sampling) {
  ToyModelConfig c;
  c.drift_amplitude = 0.0;
  c.rapid_change_probability = 0.0;
  c.anomaly_fraction = 0.0;
  c.distortion_probability = 0.0;
  c.sampling = sampling;
  return c;
}

class ToyDataset5000 : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { data_ = new ToyDataset(GenerateToyDataset(11, 5000)); }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }
  static const ToyDataset& data() { return *data_; }

 private:
  static ToyDataset* data_;
};
ToyDataset* ToyDataset5000::data_ = nullptr;

TEST(ToyModel, SameSeedGivesTheSameRuns) {
  const ToyDataset a = GenerateToyDataset(3, 200);
  const ToyDataset b = GenerateToyDataset(3, 200);
  for (std::size_t i = 0; i < a.table.runs.size(); ++i) {
    ASSERT_EQ(a.table.runs[i].counts, b.table.runs[i].counts) << "run " << i;
    ASSERT_EQ(a.table.runs[i].label, b.table.runs[i].label) << "run " << i;
    ASSERT_EQ(a.truth[i].mu, b.truth[i].mu) << "run " << i;
  }
}

TEST(ToyModel, DifferentSeedsGiveDifferentRuns) {
  const ToyDataset a = GenerateToyDataset(3, 5);
  const ToyDataset b = GenerateToyDataset(4, 5);
  EXPECT_NE(a.table.runs[0].counts, b.table.runs[0].counts);
}

TEST(ToyModel, RunsAreNumberedFromZeroWithTheConfiguredBins) {
  const ToyDataset d = GenerateToyDataset(5, 10);
  for (std::size_t i = 0; i < d.table.runs.size(); ++i) {
    EXPECT_EQ(d.table.runs[i].run, static_cast<std::int64_t>(i));
    EXPECT_EQ(d.table.runs[i].counts.size(), 100u);
  }
}

TEST_F(ToyDataset5000, AboutOneRunInTenIsAnomalous) {
  const auto bad = std::count_if(data().table.runs.begin(), data().table.runs.end(),
                                 [](const RunRecord& r) { return r.label == Label::kBad; });
  // Binomial(5000, 0.1): standard deviation 21 runs; this band is 3.5 of them.
  EXPECT_GT(bad, 425);
  EXPECT_LT(bad, 575);
}

TEST_F(ToyDataset5000, DeadBinsOnlyOnAnomalousRunsAndBetweenOneAndNineteen) {
  for (std::size_t i = 0; i < data().truth.size(); ++i) {
    const RunRecord& r = data().table.runs[i];
    const int dead = data().truth[i].n_dead_bins;
    if (r.label != Label::kBad) {
      ASSERT_EQ(dead, 0) << "good run " << r.run;
      continue;
    }
    ASSERT_GE(dead, 1) << "run " << r.run;
    ASSERT_LE(dead, 19) << "run " << r.run;
    const auto zeros = std::count(r.counts.begin(), r.counts.end(), 0.0);
    ASSERT_GE(zeros, dead) << "run " << r.run;
  }
}

TEST_F(ToyDataset5000, CountsAreNonNegativeWholeNumbers) {
  for (const RunRecord& r : data().table.runs) {
    for (double c : r.counts) {
      ASSERT_GE(c, 0.0) << "run " << r.run;
      ASSERT_EQ(c, std::floor(c)) << "run " << r.run;
    }
  }
}

TEST_F(ToyDataset5000, IntegralsStayWithinTheEntriesAndTheDistortion) {
  double sum = 0.0;
  for (const RunRecord& r : data().table.runs) {
    const double integral = Integral(r);
    // At most 19999 entries, the upper half at most 1.4 times; at least 2000 entries, most of
    // them in range, the upper half at least 0.6 times.
    ASSERT_LT(integral, 19999 * 1.4) << "run " << r.run;
    ASSERT_GT(integral, 2000 * 0.4) << "run " << r.run;
    sum += integral;
  }
  // The reference datasets have 10849 and 10918 on average.
  const double mean = sum / static_cast<double>(data().table.runs.size());
  EXPECT_GT(mean, 10500.0);
  EXPECT_LT(mean, 11200.0);
}

TEST_F(ToyDataset5000, RapidChangesHoldUntilTheNextOne) {
  // On good runs (no anomaly shift) the offsets from the drift and from width 1 stay fixed
  // between two changes. A change forgets the old offset (nothing accumulates); the first good
  // run after it shows the new one.
  std::optional<double> mu_offset = 0.0, sigma_offset = 0.0;
  int mu_changes = 0, sigma_changes = 0;
  for (std::size_t i = 0; i < data().truth.size(); ++i) {
    const ToyTruth& t = data().truth[i];
    const bool good = data().table.runs[i].label == Label::kGood;
    const double offset = t.mu - Drift(static_cast<std::int64_t>(i));
    if (t.is_rapid_change_mu) {
      ++mu_changes;
      mu_offset.reset();
      if (good) {
        EXPECT_GE(std::abs(offset), 0.5 - 1e-12) << "run " << i;
        EXPECT_LE(std::abs(offset), 1.5 + 1e-12) << "run " << i;
      }
    }
    if (t.is_rapid_change_sigma) {
      ++sigma_changes;
      sigma_offset.reset();
      if (good) {
        EXPECT_GE(std::abs(t.sigma - 1.0), 0.1 - 1e-12) << "run " << i;
        EXPECT_LE(std::abs(t.sigma - 1.0), 0.4 + 1e-12) << "run " << i;
      }
    }
    if (!good) {
      continue;
    }
    if (mu_offset) {
      ASSERT_NEAR(offset, *mu_offset, 1e-12) << "run " << i;
    }
    if (sigma_offset) {
      ASSERT_NEAR(t.sigma - 1.0, *sigma_offset, 1e-12) << "run " << i;
    }
    mu_offset = offset;
    sigma_offset = t.sigma - 1.0;
  }
  // 5000 runs at probability 0.005: 25 expected, standard deviation 5.
  EXPECT_GT(mu_changes, 8);
  EXPECT_LT(mu_changes, 45);
  EXPECT_GT(sigma_changes, 8);
  EXPECT_LT(sigma_changes, 45);
}

TEST(ToyModel, DistortionMovesTheWholeUpperHalfOneWay) {
  ToyModelConfig c = PlainGaussian(ToyModelConfig::Sampling::kEvents);
  c.distortion_probability = 0.4;
  c.min_entries = 10000;  // keeps the ratio's spread near 0.03
  ToyModel model(8, c);
  RunRecord r;
  ToyTruth t;
  int up = 0, down = 0;
  for (int i = 0; i < 100; ++i) {
    model.Next(r, t);
    const double lower = std::accumulate(r.counts.begin(), r.counts.begin() + 50, 0.0);
    const double upper = std::accumulate(r.counts.begin() + 50, r.counts.end(), 0.0);
    // A symmetric Gaussian: the upper half holds 1.4 or 0.6 times the lower half's entries.
    const double ratio = upper / lower;
    ASSERT_TRUE(std::abs(ratio - 1.4) < 0.15 || std::abs(ratio - 0.6) < 0.1)
        << "run " << i << " ratio " << ratio;
    (ratio > 1.0 ? up : down)++;
  }
  EXPECT_GT(up, 25);
  EXPECT_GT(down, 25);
}

// Both samplers must give histograms of the same Gaussian: over many runs, the share of the
// in-range entries in every bin sits on the bin's probability given the range.
void ExpectBinProbabilities(ToyModelConfig::Sampling sampling) {
  ToyModelConfig c = PlainGaussian(sampling);
  c.bins = 20;
  c.low = -3.0;
  c.high = 3.0;
  ToyModel model(21, c);
  std::vector<double> counts(c.bins, 0.0);
  RunRecord r;
  ToyTruth t;
  for (int i = 0; i < 400; ++i) {
    model.Next(r, t);
    for (std::size_t b = 0; b < c.bins; ++b) {
      counts[b] += r.counts[b];
    }
  }
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  const auto cdf = [](double v) { return 0.5 * std::erfc(-v / std::numbers::sqrt2); };
  const double in_range = cdf(3.0) - cdf(-3.0);
  for (std::size_t b = 0; b < c.bins; ++b) {
    const double lo = c.low + 0.3 * static_cast<double>(b);
    const double p = (cdf(lo + 0.3) - cdf(lo)) / in_range;
    // About 4.4 million entries: the outermost bins hold some 10000, a relative spread of 1 %.
    EXPECT_NEAR(counts[b] / total, p, 0.05 * p) << "bin " << b;
  }
}

TEST(ToyModel, EventSamplingFollowsTheGaussianBinProbabilities) {
  ExpectBinProbabilities(ToyModelConfig::Sampling::kEvents);
}

TEST(ToyModel, MultinomialSamplingFollowsTheGaussianBinProbabilities) {
  ExpectBinProbabilities(ToyModelConfig::Sampling::kMultinomial);
}

TEST(ToyModel, ValuesOutsideTheRangeAreDropped) {
  ToyModelConfig c = PlainGaussian(ToyModelConfig::Sampling::kEvents);
  c.bins = 10;
  c.low = 0.0;
  c.high = 5.0;
  c.min_entries = 10000;
  c.max_entries = 10001;
  ToyModel model(2, c);
  RunRecord r;
  ToyTruth t;
  model.Next(r, t);
  ASSERT_EQ(r.counts.size(), 10u);
  // Half of N(0, 1) lies above 0: 5000 of the 10000 entries, give or take 50.
  EXPECT_NEAR(Integral(r), 5000.0, 250.0);
}

TEST(ToyModel, ConfigurationThatCannotBeDrawnIsRefused) {
  ToyModelConfig no_bins;
  no_bins.bins = 0;
  EXPECT_THROW(ToyModel(1, no_bins), std::invalid_argument);
  ToyModelConfig empty_range;
  empty_range.high = empty_range.low;
  EXPECT_THROW(ToyModel(1, empty_range), std::invalid_argument);
  ToyModelConfig bad_probability;
  bad_probability.anomaly_fraction = 1.5;
  EXPECT_THROW(ToyModel(1, bad_probability), std::invalid_argument);
}

TEST(ToyModel, DatasetRoundTripsThroughTheReplayFormat) {
  const ToyDataset d = GenerateToyDataset(9, 30);
  std::stringstream csv;
  WriteRunTable(d.table, csv);
  const RunTable back = ParseRunTable(csv, "toy.csv");
  ASSERT_EQ(back.runs.size(), d.table.runs.size());
  for (std::size_t i = 0; i < back.runs.size(); ++i) {
    EXPECT_EQ(back.runs[i].counts, d.table.runs[i].counts);
    EXPECT_EQ(back.runs[i].label, d.table.runs[i].label);
  }
}

TEST(ToyModel, TruthCsvHasOneRowPerRunUnderTheContractHeader) {
  const ToyDataset d = GenerateToyDataset(9, 30);
  std::stringstream out;
  WriteToyTruth(d, out);
  std::string line;
  std::getline(out, line);
  EXPECT_EQ(line, "run,mu,sigma,is_rapid_change_mu,is_rapid_change_sigma,n_dead_bins");
  int rows = 0;
  while (std::getline(out, line)) {
    EXPECT_EQ(std::count(line.begin(), line.end(), ','), 5) << line;
    ++rows;
  }
  EXPECT_EQ(rows, 30);
}

}  // namespace
}  // namespace dinamo
