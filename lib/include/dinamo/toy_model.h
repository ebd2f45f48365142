#pragma once

// The paper's synthetic detector (DESIGN.md section 7, "the toy model"): one histogram per run of
// a Gaussian whose mean drifts slowly and jumps now and then, whose width jumps too, with a
// systematic distortion of the upper half of the axis, and about one run in ten anomalous.
//
// A ToyModel is a stream: it draws run after run, so that a simulator can publish for as long as
// it likes. The same seed and configuration always give the same runs with the same standard
// library (std::mt19937_64 is fixed by the standard; the distributions are the library's own).
//
// Anomalies are drawn run by run (probability anomaly_fraction), where the paper's generator
// picks exactly 10 % of a finished dataset; a stream has no end to count from. Over 40 datasets
// of 5000 runs the calibrated continual balanced accuracy of DINAMO-S is the same for both
// within the spread (median 0.946 with this model, 0.945 with the paper's procedure).

#include <cstdint>
#include <iosfwd>
#include <random>
#include <vector>

#include "dinamo/run_table.h"

namespace dinamo {

struct ToyModelConfig {
  // Binning of the histogram; values outside [low, high) are not counted.
  std::size_t bins = 100;
  double low = -5.0;
  double high = 5.0;

  // Entries drawn per run: an integer uniform on [min_entries, max_entries).
  std::int64_t min_entries = 2000;
  std::int64_t max_entries = 20000;

  // Slow drift of the mean: 0.5 sin(pi t / period).
  double drift_amplitude = 0.5;
  double drift_period = 500.0;
  double width = 1.0;

  // Rapid changes: per run and separately for mean and width, an offset of random sign and
  // uniform magnitude replaces the previous one and holds until the next change.
  double rapid_change_probability = 0.005;
  double rapid_mu_min = 0.5, rapid_mu_max = 1.5;
  double rapid_sigma_min = 0.1, rapid_sigma_max = 0.4;

  // Anomalous runs (label bad): each shift applies independently with its probability; every
  // anomalous run has between 1 and max_dead_bins distinct bins zeroed.
  double anomaly_fraction = 0.1;
  double anomaly_shift_probability = 0.9;
  double anomaly_mu_min = 0.25, anomaly_mu_max = 0.75;
  double anomaly_sigma_min = 0.05, anomaly_sigma_max = 0.2;
  int max_dead_bins = 19;

  // Systematic distortion: the counts of the upper half of the bins (bins / 2 onwards) change by
  // sign * Binomial(count, p), one random sign per run.
  double distortion_probability = 0.4;

  // How the entries of a run are drawn. kEvents draws every value and histograms it, as the
  // paper's generator does. kMultinomial draws the bin counts directly from the multinomial
  // distribution with the Gaussian's bin probabilities: the same distribution of histograms
  // (the counts of N independent values falling into bins are multinomial), at a cost that grows
  // with the bins rather than with the entries; the bus simulator uses it.
  enum class Sampling { kEvents, kMultinomial };
  Sampling sampling = Sampling::kEvents;
};

// What the generator did for one run.
struct ToyTruth {
  double mu = 0.0;     // mean of the Gaussian, anomaly shift included
  double sigma = 1.0;  // width of the Gaussian, anomaly shift included
  bool is_rapid_change_mu = false;
  bool is_rapid_change_sigma = false;
  int n_dead_bins = 0;
};

class ToyModel {
 public:
  // Throws std::invalid_argument for a configuration that cannot be drawn from (no bins, an
  // empty range, a probability outside [0, 1], entries not increasing).
  explicit ToyModel(std::uint64_t seed, ToyModelConfig config = {});

  // Draws the next run (run numbers 0, 1, 2, ...) into `record` and `truth`, reusing the
  // record's buffer.
  void Next(RunRecord& record, ToyTruth& truth);

  std::int64_t next_run() const { return next_run_; }
  const ToyModelConfig& config() const { return config_; }

 private:
  void UpdateRapidChanges(ToyTruth& truth);
  void DrawAnomaly(ToyTruth& truth, double& mu_shift, double& sigma_shift);
  void FillEvents(double mu, double sigma, std::int64_t entries, std::vector<double>& counts);
  void FillMultinomial(double mu, double sigma, std::int64_t entries, std::vector<double>& counts);
  void Distort(std::vector<double>& counts);
  void KillBins(int dead_bins, std::vector<double>& counts);
  double RandomSign();

  ToyModelConfig config_;
  std::mt19937_64 rng_;
  std::int64_t next_run_ = 0;
  double mu_offset_ = 0.0;
  double sigma_offset_ = 0.0;
  std::vector<std::size_t> bin_order_;  // scratch for choosing distinct dead bins
};

// A whole dataset: the replay table and, run by run, the truth beside it.
struct ToyDataset {
  RunTable table;
  std::vector<ToyTruth> truth;
};

ToyDataset GenerateToyDataset(std::uint64_t seed, std::size_t runs, ToyModelConfig config = {});

// The truth CSV: header `run,mu,sigma,is_rapid_change_mu,is_rapid_change_sigma,n_dead_bins`,
// numbers with full precision.
void WriteToyTruth(const ToyDataset& dataset, std::ostream& out);

}  // namespace dinamo
