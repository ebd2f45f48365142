#pragma once

// DINAMO-ML: the template predicted by a small transformer encoder from the most recent good
// runs, trained online (DESIGN.md section 3). libtorch stays behind a pimpl: including this
// header never pulls in torch headers.

#include <cstdint>
#include <iosfwd>
#include <limits>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "dinamo/observation.h"
#include "dinamo/score.h"
#include "dinamo/template_model.h"

namespace dinamo {

// The published hyperparameters are the defaults; tests shrink nothing but the bins.
struct TransformerOptions {
  std::size_t bins = 0;
  int width = 100;        // d
  int context_runs = 20;  // M: good runs the model reads before the run it predicts
  int batch_runs = 10;    // K: most recent good runs in one training step
  int layers = 3;
  int heads = 10;
  int feedforward = 100;
  double dropout = 0.15;
  double learning_rate = 5e-4;
  double weight_decay = 1e-4;
  int patience = 5;      // stop after this many steps in a row without a lower loss
  int max_steps = 1000;  // per training
  double variance_floor = 1e-9;
  std::uint64_t seed = 22;
  // libtorch's intra-op threads. Process-wide in libtorch: the last model built decides.
  int threads = 1;
};

// Missing context (fewer than M earlier good runs) is padded at the front with these.
inline constexpr float kPadContent = 0.01F;
inline constexpr float kPadTime = -100.0F;

// A good run as the model remembers it: its run (time index) and normalised contents.
struct GoodRun {
  std::int64_t run = 0;
  std::vector<float> x;
};

// The model's input for a run at time t: M rows, oldest first, of contents (M x B, row-major)
// and times relative to t (run - t, negative).
struct RunContext {
  std::vector<float> contents;
  std::vector<float> times;
};

// Builds the context of time t from `history` (sorted by increasing run): the M most recent
// runs with run < t, padded at the front. Writes M * bins contents and M times.
void FillContext(std::span<const GoodRun> history, std::int64_t t, std::size_t context_runs,
                 std::size_t bins, std::span<float> contents, std::span<float> times);

// Early stopping by patience, kept apart from the optimiser so that the rule can be tested on
// a scripted sequence of losses.
class EarlyStopping {
 public:
  EarlyStopping(int patience, int max_steps) : patience_(patience), max_steps_(max_steps) {}

  // Records the loss of the step just taken; false once training should stop.
  bool Continue(double loss);

  int steps() const { return steps_; }
  double best() const { return best_; }

 private:
  int patience_;
  int max_steps_;
  int steps_ = 0;
  int since_best_ = 0;
  double best_ = std::numeric_limits<double>::infinity();
};

// Mean over all elements of torch's Gaussian negative log-likelihood without the constant
// (torch.nn.functional.gaussian_nll_loss, full=False): 0.5 * (ln v + (x - mu)^2 / v) with
// v = max(var, floor). The same tensor code the trainer uses, on plain numbers.
double GaussianNll(std::span<const double> x, std::span<const double> mu,
                   std::span<const double> var, double floor);

struct TrainingStats {
  int last_steps = 0;      // steps of the last training
  double last_loss = 0.0;  // best loss of the last training
  double last_seconds = 0.0;
  std::uint64_t trainings = 0;
  std::uint64_t total_steps = 0;
  double total_seconds = 0.0;
};

class TransformerModel final : public TemplateModel {
 public:
  explicit TransformerModel(const TransformerOptions& options);
  ~TransformerModel() override;
  TransformerModel(const TransformerModel&) = delete;
  TransformerModel& operator=(const TransformerModel&) = delete;

  std::string_view method() const override { return "transformer"; }
  std::size_t bins() const override;

  // Eval mode (no dropout), no gradients: the same inputs always give the same template.
  void Expect(std::int64_t run, Expectation& out) const override;

  // Record(run, obs), then Train().
  bool Learn(std::int64_t run, const Observation& obs) override;
  std::uint64_t learned_runs() const override;
  std::unique_ptr<TemplateModel> Clone() const override;
  std::unique_ptr<TransformerModel> CloneTransformer() const;

  // Remembers a good run without training (the daemon trains elsewhere). Refuses an empty
  // observation, a binning that differs, and a run not after the last one recorded. Only the
  // last K + M good runs are kept: all that training and the scoring of later runs read.
  bool Record(std::int64_t run, const Observation& obs);

  // The good runs recorded, increasing, at most K + M.
  std::span<const GoodRun> history() const;

  // Replaces the recorded good runs (a late label changed which runs were good) and the count
  // of runs learned, keeping the weights, the optimiser state and the generator: training goes
  // on from where it is. Keeps the last K + M. Refuses runs that do not increase or rows of
  // other bins, and then changes nothing.
  bool ReplaceHistory(std::vector<GoodRun> runs, std::uint64_t learned_runs);

  // Training steps on the K most recent good runs until early stopping. Nothing to train on
  // without a recorded run: returns stats with zero steps.
  TrainingStats Train();

  // One training step (train mode); returns its loss, the one early stopping watches.
  double TrainStep();

  // The loss on the current training batch in eval mode, without changing anything.
  double BatchLoss() const;

  // The input the model reads for a run at time `run`.
  RunContext ContextFor(std::int64_t run) const;

  const TrainingStats& stats() const;
  const TransformerOptions& options() const;

  // Model parameters, optimiser state, dropout generator and good-run history: a restored
  // model scores and trains exactly as the saved one would have. Load throws
  // std::runtime_error on a stream that is not such a snapshot or has other options.
  void Save(std::ostream& out) const;
  void Load(std::istream& in);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dinamo
