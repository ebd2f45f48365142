#pragma once

// Choosing the memory alpha and the threshold T on labelled calibration runs, and the
// classification metrics used to judge them (DESIGN.md section 7).

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "dinamo/run_table.h"

namespace dinamo {

// Anomalous (s > T) is the positive class; bad-labelled runs are the true positives. Runs of
// unknown label are left out. A ratio whose denominator is zero is reported as 0.
struct Metrics {
  double balanced_accuracy = 0.0;
  double accuracy = 0.0;
  double sensitivity = 0.0;
  double specificity = 0.0;
  double precision = 0.0;
  std::size_t runs = 0;       // runs with a known label
  std::size_t positives = 0;  // bad runs among them
};

Metrics Evaluate(std::span<const double> s, std::span<const Label> labels, double threshold);

// Area under the ROC curve of score s for telling bad from good runs (ties count one half).
double RocAuc(std::span<const double> s, std::span<const Label> labels);

// The thresholds tried: 1000 evenly spaced values from -3.25 to 7.5, both included.
std::vector<double> ThresholdGrid();

// The threshold of ThresholdGrid() with the highest median balanced accuracy over `resamples`
// bootstrap resamples of the runs (generator seeded with `seed`); the lowest such on a tie.
double ChooseThreshold(std::span<const double> s, std::span<const Label> labels,
                       int resamples = 100, std::uint64_t seed = 20250131);

// Maximises `auc(alpha)` over [0, 1] deterministically: a grid of step 0.01, then a grid of
// step 0.0005 over the bracket of +-0.01 around the best point; on a tie the first found wins.
struct AlphaChoice {
  double alpha = 0.5;
  double auc = 0.0;
};
AlphaChoice ChooseAlpha(const std::function<double(double)>& auc);

}  // namespace dinamo
