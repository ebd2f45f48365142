#include "dinamo/calibration.h"

#include <algorithm>
#include <cassert>
#include <numeric>
#include <random>

namespace dinamo {

namespace {

double Ratio(double num, double den) { return den > 0.0 ? num / den : 0.0; }

struct Confusion {
  double tp = 0, fp = 0, tn = 0, fn = 0;

  double BalancedAccuracy() const {
    return 0.5 * (Ratio(tp, tp + fn) + Ratio(tn, tn + fp));
  }
};

}  // namespace

Metrics Evaluate(std::span<const double> s, std::span<const Label> labels, double threshold) {
  assert(s.size() == labels.size());
  Confusion c;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (labels[i] == Label::kUnknown) continue;
    const bool flagged = s[i] > threshold;
    const bool bad = labels[i] == Label::kBad;
    (bad ? (flagged ? c.tp : c.fn) : (flagged ? c.fp : c.tn)) += 1;
  }

  Metrics m;
  m.runs = static_cast<std::size_t>(c.tp + c.fp + c.tn + c.fn);
  m.positives = static_cast<std::size_t>(c.tp + c.fn);
  m.sensitivity = Ratio(c.tp, c.tp + c.fn);
  m.specificity = Ratio(c.tn, c.tn + c.fp);
  m.balanced_accuracy = 0.5 * (m.sensitivity + m.specificity);
  m.accuracy = Ratio(c.tp + c.tn, static_cast<double>(m.runs));
  m.precision = Ratio(c.tp, c.tp + c.fp);
  return m;
}

double RocAuc(std::span<const double> s, std::span<const Label> labels) {
  assert(s.size() == labels.size());
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (labels[i] != Label::kUnknown) order.push_back(i);
  }
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return s[a] < s[b]; });

  // Mann-Whitney U with mid-ranks for tied scores.
  double rank_sum_bad = 0.0, bad = 0.0;
  for (std::size_t lo = 0; lo < order.size();) {
    std::size_t hi = lo;
    while (hi < order.size() && s[order[hi]] == s[order[lo]]) ++hi;
    const double mid_rank = 0.5 * static_cast<double>(lo + 1 + hi);
    for (std::size_t k = lo; k < hi; ++k) {
      if (labels[order[k]] == Label::kBad) {
        rank_sum_bad += mid_rank;
        bad += 1;
      }
    }
    lo = hi;
  }
  const double good = static_cast<double>(order.size()) - bad;
  if (bad == 0 || good == 0) return 0.5;
  return (rank_sum_bad - bad * (bad + 1) / 2.0) / (bad * good);
}

std::vector<double> ThresholdGrid() {
  constexpr int kCount = 1000;
  constexpr double kLow = -3.25, kHigh = 7.5;
  const double step = (kHigh - kLow) / (kCount - 1);
  std::vector<double> grid(kCount);
  for (int k = 0; k < kCount; ++k) grid[k] = kLow + k * step;
  grid.back() = kHigh;
  return grid;
}

double ChooseThreshold(std::span<const double> s, std::span<const Label> labels, int resamples,
                       std::uint64_t seed) {
  assert(s.size() == labels.size());
  const std::vector<double> grid = ThresholdGrid();
  const std::size_t n = s.size(), k_count = grid.size();

  // For each run, how many thresholds lie strictly below its score: it is flagged by those.
  std::vector<std::size_t> flagged_by(n);
  for (std::size_t i = 0; i < n; ++i) {
    flagged_by[i] = static_cast<std::size_t>(
        std::lower_bound(grid.begin(), grid.end(), s[i]) - grid.begin());
  }

  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::size_t> pick(0, n - 1);
  std::vector<std::vector<double>> accuracy(k_count, std::vector<double>(resamples));
  std::vector<double> bad_flagged(k_count + 1), good_flagged(k_count + 1);
  for (int r = 0; r < resamples; ++r) {
    std::fill(bad_flagged.begin(), bad_flagged.end(), 0.0);
    std::fill(good_flagged.begin(), good_flagged.end(), 0.0);
    double bad = 0, good = 0;
    for (std::size_t j = 0; j < n; ++j) {
      const std::size_t i = pick(rng);
      if (labels[i] == Label::kUnknown) continue;
      const bool is_bad = labels[i] == Label::kBad;
      (is_bad ? bad : good) += 1;
      (is_bad ? bad_flagged : good_flagged)[flagged_by[i]] += 1;
    }
    // Suffix sums: a run with flagged_by = m is flagged by thresholds 0 .. m-1.
    double tp = 0, fp = 0;
    for (std::size_t k = k_count; k-- > 0;) {
      tp += bad_flagged[k + 1];
      fp += good_flagged[k + 1];
      accuracy[k][r] = 0.5 * (Ratio(tp, bad) + Ratio(good - fp, good));
    }
  }

  double best_median = -1.0;
  std::size_t best = 0;
  for (std::size_t k = 0; k < k_count; ++k) {
    auto& a = accuracy[k];
    std::sort(a.begin(), a.end());
    const std::size_t m = a.size();
    const double median = m % 2 ? a[m / 2] : 0.5 * (a[m / 2 - 1] + a[m / 2]);
    if (median > best_median) {
      best_median = median;
      best = k;
    }
  }
  return grid[best];
}

AlphaChoice ChooseAlpha(const std::function<double(double)>& auc) {
  AlphaChoice best{0.0, -1.0};
  auto consider = [&](double alpha) {
    const double a = auc(alpha);
    if (a > best.auc) best = {alpha, a};
  };

  for (int i = 0; i <= 100; ++i) consider(i / 100.0);

  const double centre = best.alpha;
  for (int i = -20; i <= 20; ++i) {
    const double alpha = centre + i * 0.0005;
    if (alpha >= 0.0 && alpha <= 1.0 && i != 0) consider(alpha);
  }
  return best;
}

}  // namespace dinamo
