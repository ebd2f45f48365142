// DINAMO-ML cost: one training step (B = 100, K = 10, M = 20) on one and on two threads, a
// model built, one scoring, and one good run of a replay (score, then online training to early
// stopping) on toy_0.csv.

#include <cstdlib>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "dinamo/run_table.h"
#include "dinamo/transformer_template.h"

namespace dinamo {
namespace {

const RunTable& Toy() {
  static const RunTable table = ReadRunTable(std::string(DINAMO_BENCH_DATA) + "/toy_0.csv");
  return table;
}

int Threads() {
  const char* env = std::getenv("DINAMO_BENCH_THREADS");
  return env ? std::atoi(env) : 1;
}

TransformerOptions BenchOptions() {
  TransformerOptions o;
  o.bins = Toy().bins();
  o.threads = Threads();
  return o;
}

// Records good runs of the table from `next` on until `count` are recorded; returns the index
// after the last one read.
std::size_t RecordGood(TransformerModel& model, std::size_t next, std::size_t count) {
  const auto& runs = Toy().runs;
  for (std::size_t recorded = 0; recorded < count && next < runs.size(); ++next) {
    if (runs[next].label == Label::kGood) {
      recorded += model.Record(runs[next].run, Normalise(runs[next].counts)) ? 1 : 0;
    }
  }
  return next;
}

// With two threads, each trains a model of its own (two histograms on two workers): the steps
// per second of both together show whether their trainings overlap.
void BM_TransformerTrainStep(benchmark::State& state) {
  TransformerModel model(BenchOptions());
  RecordGood(model, 0, 30);
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.TrainStep());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_TransformerTrainStep)
    ->Unit(benchmark::kMillisecond)
    ->ThreadRange(1, 2)
    ->UseRealTime();

// What the daemon's loop pays for the first template of a new binning: a model built afresh.
void BM_TransformerBuild(benchmark::State& state) {
  const TransformerOptions options = BenchOptions();
  for (auto _ : state) {
    TransformerModel model(options);
    benchmark::DoNotOptimize(model.learned_runs());
  }
}
BENCHMARK(BM_TransformerBuild)->Unit(benchmark::kMillisecond);

void BM_TransformerScore(benchmark::State& state) {
  TransformerModel model(BenchOptions());
  const std::size_t next = RecordGood(model, 0, 30);
  const RunRecord& record = Toy().runs[next];
  const Observation obs = Normalise(record.counts);
  std::vector<double> pulls(obs.bins());
  for (auto _ : state) {
    benchmark::DoNotOptimize(model.ScoreRun(record.run, obs, pulls));
  }
}
BENCHMARK(BM_TransformerScore)->Unit(benchmark::kMillisecond);

// What a replay spends per good run: the score, then training until early stopping. The model
// walks along the table, so every iteration is the next good run with its own stopping point.
void BM_TransformerGoodRun(benchmark::State& state) {
  TransformerModel model(BenchOptions());
  std::size_t next = RecordGood(model, 0, 30);
  model.Train();
  const auto& runs = Toy().runs;
  std::vector<double> pulls(Toy().bins());
  const std::uint64_t steps_before = model.stats().total_steps;
  for (auto _ : state) {
    while (runs[next].label != Label::kGood) {
      ++next;
    }
    const Observation obs = Normalise(runs[next].counts);
    benchmark::DoNotOptimize(model.ScoreRun(runs[next].run, obs, pulls));
    model.Learn(runs[next].run, obs);
    ++next;
  }
  state.counters["steps_per_run"] =
      benchmark::Counter(static_cast<double>(model.stats().total_steps - steps_before) /
                         static_cast<double>(state.iterations()));
}
BENCHMARK(BM_TransformerGoodRun)->Unit(benchmark::kMillisecond)->Iterations(40);

}  // namespace
}  // namespace dinamo

BENCHMARK_MAIN();
