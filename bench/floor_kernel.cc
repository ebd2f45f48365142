#include "floor_kernel.h"

#include <algorithm>
#include <cmath>

#include "dinamo/score.h"
#include <immintrin.h>

namespace dinamo::bench {

namespace {

// The same floor as LearnEwma's: keeps the weight of a perfectly measured bin finite.
constexpr double kWeightFloor = 1e-9;

// One division by the weight per bin serves both the score (mu = S_mu / W, sigma_mu^2 =
// S_sigma / W) and the residual of the learning step, which uses the template before the update.
inline double StepBin(std::size_t b, const FloorData& d, double a, double na) {
  const double inv_w = 1.0 / d.weight[b];
  const double mu = d.sum_mu[b] * inv_w;
  const double var = std::max(d.var_x[b] + d.sum_sigma[b] * inv_w, kMinVariance);
  const double diff = d.x[b] - mu;
  const double pull = diff / std::sqrt(var);
  d.pulls[b] = pull;

  const double omega = na / (d.var_x[b] + kWeightFloor);
  d.sum_sigma[b] = a * d.sum_sigma[b] + omega * diff * diff;
  d.sum_mu[b] = a * d.sum_mu[b] + omega * d.x[b];
  d.weight[b] = a * d.weight[b] + omega;
  return pull * pull;
}

__attribute__((target("avx2,fma"))) double FloorStepAvx2(const FloorData& d) {
  const double a = d.alpha;
  const double na = 1.0 - a;
  const __m256d va = _mm256_set1_pd(a);
  const __m256d vna = _mm256_set1_pd(na);
  const __m256d one = _mm256_set1_pd(1.0);
  const __m256d min_var = _mm256_set1_pd(kMinVariance);
  const __m256d weight_floor = _mm256_set1_pd(kWeightFloor);

  __m256d chi2 = _mm256_setzero_pd();
  std::size_t b = 0;
  for (; b + 4 <= d.bins; b += 4) {
    const __m256d w = _mm256_loadu_pd(d.weight + b);
    const __m256d smu = _mm256_loadu_pd(d.sum_mu + b);
    const __m256d ssig = _mm256_loadu_pd(d.sum_sigma + b);
    const __m256d x = _mm256_loadu_pd(d.x + b);
    const __m256d vx = _mm256_loadu_pd(d.var_x + b);

    const __m256d inv_w = _mm256_div_pd(one, w);
    const __m256d mu = _mm256_mul_pd(smu, inv_w);
    const __m256d var = _mm256_max_pd(_mm256_fmadd_pd(ssig, inv_w, vx), min_var);
    const __m256d diff = _mm256_sub_pd(x, mu);
    const __m256d pull = _mm256_div_pd(diff, _mm256_sqrt_pd(var));
    _mm256_storeu_pd(d.pulls + b, pull);
    chi2 = _mm256_fmadd_pd(pull, pull, chi2);

    const __m256d omega = _mm256_div_pd(vna, _mm256_add_pd(vx, weight_floor));
    const __m256d omega_diff = _mm256_mul_pd(omega, diff);
    _mm256_storeu_pd(d.sum_sigma + b, _mm256_fmadd_pd(va, ssig, _mm256_mul_pd(omega_diff, diff)));
    _mm256_storeu_pd(d.sum_mu + b, _mm256_fmadd_pd(va, smu, _mm256_mul_pd(omega, x)));
    _mm256_storeu_pd(d.weight + b, _mm256_fmadd_pd(va, w, omega));
  }

  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, chi2);
  double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
  for (; b < d.bins; ++b) {
    sum += StepBin(b, d, a, na);
  }
  return sum;
}

bool HasAvx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

}  // namespace

double FloorStepScalar(const FloorData& d) {
  const double a = d.alpha;
  const double na = 1.0 - a;
  double chi2 = 0.0;
  for (std::size_t b = 0; b < d.bins; ++b) {
    chi2 += StepBin(b, d, a, na);
  }
  return chi2;
}

bool FloorUsesAvx2() {
  static const bool avx2 = HasAvx2();
  return avx2;
}

double FloorStep(const FloorData& d) {
  return FloorUsesAvx2() ? FloorStepAvx2(d) : FloorStepScalar(d);
}

}  // namespace dinamo::bench
