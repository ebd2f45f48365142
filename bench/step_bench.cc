// The cost of one DINAMO-S step (score a histogram against its template, then learn from it),
// for the library's code path and for the hand-vectorised floor kernel beside it.
//
//   build-sim/bench/step_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <cmath>
#include <cstdio>
#include <vector>

#include <benchmark/benchmark.h>

#include "dinamo/ewma_template.h"
#include "dinamo/observation.h"
#include "dinamo/toy_model.h"
#include "floor_kernel.h"

namespace {

// Steps cycle through a few real toy runs, so that the template keeps moving as it does in
// service (learning one histogram over and over would drive the residual sums towards
// denormal numbers, which are slow for reasons that have nothing to do with the method).
constexpr std::size_t kRuns = 16;
constexpr int kWarmupRuns = 50;

struct StepSetup {
  dinamo::EwmaState state;
  std::vector<std::vector<double>> counts;
  std::vector<dinamo::Observation> observations;
  std::vector<double> pulls;
};

StepSetup MakeSetup(std::size_t bins) {
  dinamo::ToyModelConfig config;
  config.bins = bins;
  config.sampling = dinamo::ToyModelConfig::Sampling::kMultinomial;
  dinamo::ToyModel model(20250131, config);

  StepSetup s;
  s.state = dinamo::InitialEwmaState(bins, 0.5);
  s.pulls.resize(bins);
  dinamo::RunRecord run;
  dinamo::ToyTruth truth;
  dinamo::Observation obs;
  for (int i = 0; i < kWarmupRuns; ++i) {
    model.Next(run, truth);
    dinamo::Normalise(run.counts, obs);
    if (run.label == dinamo::Label::kGood) {
      dinamo::LearnEwma(s.state, obs);
    }
  }
  while (s.observations.size() < kRuns) {
    model.Next(run, truth);
    if (run.label == dinamo::Label::kGood) {
      s.counts.push_back(run.counts);
      s.observations.push_back(dinamo::Normalise(run.counts));
    }
  }
  return s;
}

dinamo::bench::FloorData FloorView(StepSetup& s, const dinamo::Observation& obs) {
  return {s.state.bins(),           s.state.alpha, s.state.weight.data(), s.state.sum_mu.data(),
          s.state.sum_sigma.data(), obs.x.data(),  obs.var_x.data(),      s.pulls.data()};
}

void SetCounters(benchmark::State& state, std::size_t bins) {
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(bins));
}

void BM_LibraryStep(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  std::size_t i = 0;
  for (auto _ : state) {
    const dinamo::Observation& obs = s.observations[i++ % kRuns];
    const dinamo::Score score = dinamo::ScoreEwma(s.state, obs, s.pulls);
    benchmark::DoNotOptimize(score);
    dinamo::LearnEwma(s.state, obs);
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

void BM_LibraryScore(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  std::size_t i = 0;
  for (auto _ : state) {
    const dinamo::Score score = dinamo::ScoreEwma(s.state, s.observations[i++ % kRuns], s.pulls);
    benchmark::DoNotOptimize(score);
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

void BM_LibraryLearn(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  std::size_t i = 0;
  for (auto _ : state) {
    dinamo::LearnEwma(s.state, s.observations[i++ % kRuns]);
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

void BM_Normalise(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  dinamo::Observation obs;
  std::size_t i = 0;
  for (auto _ : state) {
    dinamo::Normalise(s.counts[i++ % kRuns], obs);
    benchmark::DoNotOptimize(obs.x.data());
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

// What the daemon does per accepted histogram: raw counts in, verdict numbers out, learned.
void BM_LibraryFullStep(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  dinamo::Observation obs;
  std::size_t i = 0;
  for (auto _ : state) {
    dinamo::Normalise(s.counts[i++ % kRuns], obs);
    const dinamo::Score score = dinamo::ScoreEwma(s.state, obs, s.pulls);
    benchmark::DoNotOptimize(score);
    dinamo::LearnEwma(s.state, obs);
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

template <double (*Kernel)(const dinamo::bench::FloorData&)>
void BM_Floor(benchmark::State& state) {
  const auto bins = static_cast<std::size_t>(state.range(0));
  StepSetup s = MakeSetup(bins);
  std::size_t i = 0;
  for (auto _ : state) {
    const double chi2 = Kernel(FloorView(s, s.observations[i++ % kRuns]));
    benchmark::DoNotOptimize(chi2);
    benchmark::ClobberMemory();
  }
  SetCounters(state, bins);
}

void BM_FloorStep(benchmark::State& state) { BM_Floor<dinamo::bench::FloorStep>(state); }
void BM_FloorStepScalar(benchmark::State& state) {
  BM_Floor<dinamo::bench::FloorStepScalar>(state);
}

BENCHMARK(BM_LibraryStep)->Arg(100)->Arg(1000);
BENCHMARK(BM_FloorStep)->Arg(100)->Arg(1000);
BENCHMARK(BM_FloorStepScalar)->Arg(100)->Arg(1000);
BENCHMARK(BM_LibraryScore)->Arg(100)->Arg(1000);
BENCHMARK(BM_LibraryLearn)->Arg(100)->Arg(1000);
BENCHMARK(BM_Normalise)->Arg(100)->Arg(1000);
BENCHMARK(BM_LibraryFullStep)->Arg(100)->Arg(1000);

// A floor that computed something else would be no floor: before timing anything, run both for
// a few steps from the same state and require the same chi2 and template.
bool FloorAgreesWithLibrary(std::size_t bins) {
  StepSetup lib = MakeSetup(bins);
  StepSetup floor = MakeSetup(bins);
  double worst = 0.0;
  for (std::size_t i = 0; i < 2 * kRuns; ++i) {
    const dinamo::Observation& obs = lib.observations[i % kRuns];
    const double chi2_lib = dinamo::ScoreEwma(lib.state, obs, lib.pulls).chi2;
    dinamo::LearnEwma(lib.state, obs);
    const double chi2_floor = dinamo::bench::FloorStep(FloorView(floor, obs));
    worst = std::max(worst, std::abs(chi2_floor - chi2_lib) / chi2_lib);
    for (std::size_t b = 0; b < bins; ++b) {
      const double mu_lib = lib.state.sum_mu[b] / lib.state.weight[b];
      const double mu_floor = floor.state.sum_mu[b] / floor.state.weight[b];
      worst = std::max(worst, std::abs(mu_floor - mu_lib) / mu_lib);
    }
  }
  std::fprintf(stderr,
               "floor kernel: %s, largest relative difference to the library %.2g "
               "(bins=%zu)\n",
               dinamo::bench::FloorUsesAvx2() ? "avx2+fma" : "scalar", worst, bins);
  return worst < 1e-9;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 2;
  }
  if (!FloorAgreesWithLibrary(100) || !FloorAgreesWithLibrary(1000)) {
    std::fprintf(stderr, "floor kernel disagrees with the library: not benchmarking\n");
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
