#include "dinamo/toy_model.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numbers>
#include <numeric>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace dinamo {

namespace {

void Require(bool condition, const char* what) {
  if (!condition) throw std::invalid_argument(std::string("toy model: ") + what);
}

bool IsProbability(double p) { return p >= 0.0 && p <= 1.0; }

void Validate(const ToyModelConfig& c) {
  Require(c.bins > 0, "bins must be positive");
  Require(std::isfinite(c.low) && std::isfinite(c.high) && c.low < c.high,
          "the range must be finite with low < high");
  Require(c.min_entries >= 0 && c.min_entries < c.max_entries,
          "entries must satisfy 0 <= min_entries < max_entries");
  Require(c.drift_period > 0.0, "drift_period must be positive");
  Require(IsProbability(c.rapid_change_probability) && IsProbability(c.anomaly_fraction) &&
              IsProbability(c.anomaly_shift_probability) && IsProbability(c.distortion_probability),
          "probabilities must lie in [0, 1]");
  Require(c.rapid_mu_min <= c.rapid_mu_max && c.rapid_sigma_min <= c.rapid_sigma_max &&
              c.anomaly_mu_min <= c.anomaly_mu_max && c.anomaly_sigma_min <= c.anomaly_sigma_max,
          "every shift range must have min <= max");
  // The widest possible downward jump must leave a positive width to draw from.
  Require(c.width - c.rapid_sigma_max - c.anomaly_sigma_max > 0.0,
          "width minus the largest width shifts must stay positive");
  Require(c.max_dead_bins >= 1, "max_dead_bins must be at least 1");
}

// P(X >= edge) for X ~ N(mu, sigma), accurate far into either tail.
double UpperTail(double edge, double mu, double sigma) {
  return 0.5 * std::erfc((edge - mu) / (sigma * std::numbers::sqrt2));
}

void AppendNumber(std::ostream& out, double value) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  out << std::string_view(buf, static_cast<std::size_t>(end - buf));
}

}  // namespace

ToyModel::ToyModel(std::uint64_t seed, ToyModelConfig config)
    : config_(config), rng_(seed), bin_order_(config.bins) {
  Validate(config_);
}

double ToyModel::RandomSign() { return std::bernoulli_distribution(0.5)(rng_) ? 1.0 : -1.0; }

void ToyModel::UpdateRapidChanges(ToyTruth& truth) {
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  if (unit(rng_) < config_.rapid_change_probability) {
    const double size =
        std::uniform_real_distribution<double>(config_.rapid_mu_min, config_.rapid_mu_max)(rng_);
    mu_offset_ = RandomSign() * size;
    truth.is_rapid_change_mu = true;
  }
  if (unit(rng_) < config_.rapid_change_probability) {
    const double size = std::uniform_real_distribution<double>(config_.rapid_sigma_min,
                                                               config_.rapid_sigma_max)(rng_);
    sigma_offset_ = RandomSign() * size;
    truth.is_rapid_change_sigma = true;
  }
}

void ToyModel::DrawAnomaly(ToyTruth& truth, double& mu_shift, double& sigma_shift) {
  std::bernoulli_distribution shifted(config_.anomaly_shift_probability);
  if (shifted(rng_)) {
    const double size = std::uniform_real_distribution<double>(config_.anomaly_mu_min,
                                                               config_.anomaly_mu_max)(rng_);
    mu_shift = RandomSign() * size;
  }
  if (shifted(rng_)) {
    const double size = std::uniform_real_distribution<double>(config_.anomaly_sigma_min,
                                                               config_.anomaly_sigma_max)(rng_);
    sigma_shift = RandomSign() * size;
  }
  const int most = static_cast<int>(
      std::min<std::size_t>(static_cast<std::size_t>(config_.max_dead_bins), config_.bins));
  truth.n_dead_bins = std::uniform_int_distribution<int>(1, most)(rng_);
}

void ToyModel::FillEvents(double mu, double sigma, std::int64_t entries,
                          std::vector<double>& counts) {
  const double bins_per_unit = static_cast<double>(config_.bins) / (config_.high - config_.low);
  std::normal_distribution<double> gauss(mu, sigma);
  for (std::int64_t i = 0; i < entries; ++i) {
    const double v = gauss(rng_);
    if (!(v >= config_.low && v < config_.high)) {
      continue;
    }
    // Rounding can put a value just below `high` one past the last bin.
    const auto bin =
        std::min(static_cast<std::size_t>((v - config_.low) * bins_per_unit), config_.bins - 1);
    counts[bin] += 1.0;
  }
}

// The counts of a multinomial drawn bin by bin: each bin takes a binomial share of the entries
// not yet placed, with the probability of the bin given that the value lies at or above it.
// Whatever is left after the last bin is the overflow.
void ToyModel::FillMultinomial(double mu, double sigma, std::int64_t entries,
                               std::vector<double>& counts) {
  using Binomial = std::binomial_distribution<std::int64_t>;
  Binomial binomial;
  const double width = (config_.high - config_.low) / static_cast<double>(config_.bins);

  double tail = UpperTail(config_.low, mu, sigma);
  std::int64_t left = entries - binomial(rng_, Binomial::param_type(entries, 1.0 - tail));
  for (std::size_t b = 0; b < config_.bins && left > 0 && tail > 0.0; ++b) {
    const double edge =
        b + 1 == config_.bins ? config_.high : config_.low + static_cast<double>(b + 1) * width;
    const double next_tail = UpperTail(edge, mu, sigma);
    const double p = std::clamp(1.0 - next_tail / tail, 0.0, 1.0);
    const std::int64_t c = binomial(rng_, Binomial::param_type(left, p));
    counts[b] = static_cast<double>(c);
    left -= c;
    tail = next_tail;
  }
}

void ToyModel::Distort(std::vector<double>& counts) {
  using Binomial = std::binomial_distribution<std::int64_t>;
  Binomial binomial;
  const double sign = RandomSign();
  for (std::size_t b = config_.bins / 2; b < config_.bins; ++b) {
    // The change never exceeds the count it is drawn from, so a downward change leaves the
    // bin at zero or above: no clamp is needed.
    const auto n = static_cast<std::int64_t>(counts[b]);
    const auto change = binomial(rng_, Binomial::param_type(n, config_.distortion_probability));
    counts[b] += sign * static_cast<double>(change);
  }
}

// A partial Fisher-Yates shuffle picks `dead_bins` distinct bins.
void ToyModel::KillBins(int dead_bins, std::vector<double>& counts) {
  std::iota(bin_order_.begin(), bin_order_.end(), std::size_t{0});
  for (std::size_t i = 0; i < static_cast<std::size_t>(dead_bins); ++i) {
    const std::size_t j = std::uniform_int_distribution<std::size_t>(i, config_.bins - 1)(rng_);
    std::swap(bin_order_[i], bin_order_[j]);
    counts[bin_order_[i]] = 0.0;
  }
}

void ToyModel::Next(RunRecord& record, ToyTruth& truth) {
  truth = ToyTruth{};
  record.run = next_run_;
  UpdateRapidChanges(truth);

  const double t = static_cast<double>(next_run_);
  double mu =
      config_.drift_amplitude * std::sin(std::numbers::pi * t / config_.drift_period) + mu_offset_;
  double sigma = config_.width + sigma_offset_;
  const bool anomalous = std::bernoulli_distribution(config_.anomaly_fraction)(rng_);
  if (anomalous) {
    double mu_shift = 0.0, sigma_shift = 0.0;
    DrawAnomaly(truth, mu_shift, sigma_shift);
    mu += mu_shift;
    sigma += sigma_shift;
  }
  record.label = anomalous ? Label::kBad : Label::kGood;
  truth.mu = mu;
  truth.sigma = sigma;

  const std::int64_t entries = std::uniform_int_distribution<std::int64_t>(
      config_.min_entries, config_.max_entries - 1)(rng_);
  record.counts.assign(config_.bins, 0.0);
  if (config_.sampling == ToyModelConfig::Sampling::kEvents) {
    FillEvents(mu, sigma, entries, record.counts);
  } else {
    FillMultinomial(mu, sigma, entries, record.counts);
  }
  Distort(record.counts);
  if (anomalous) {
    KillBins(truth.n_dead_bins, record.counts);
  }
  ++next_run_;
}

ToyDataset GenerateToyDataset(std::uint64_t seed, std::size_t runs, ToyModelConfig config) {
  ToyModel model(seed, config);
  ToyDataset data;
  data.table.runs.resize(runs);
  data.truth.resize(runs);
  for (std::size_t i = 0; i < runs; ++i) {
    model.Next(data.table.runs[i], data.truth[i]);
  }
  return data;
}

void WriteToyTruth(const ToyDataset& dataset, std::ostream& out) {
  out << "run,mu,sigma,is_rapid_change_mu,is_rapid_change_sigma,n_dead_bins\n";
  for (std::size_t i = 0; i < dataset.truth.size(); ++i) {
    const ToyTruth& t = dataset.truth[i];
    out << dataset.table.runs[i].run << ',';
    AppendNumber(out, t.mu);
    out << ',';
    AppendNumber(out, t.sigma);
    out << ',' << (t.is_rapid_change_mu ? 1 : 0) << ',' << (t.is_rapid_change_sigma ? 1 : 0) << ','
        << t.n_dead_bins << '\n';
  }
}

}  // namespace dinamo
