// DINAMO-ML's encoder is our own so that dropout draws from each model's generator; these
// tests hold it to libtorch's own TransformerEncoder, which DESIGN.md section 3 names: the same
// parameters, the same initial weights for a seed, the same training step.

#include <atomic>
#include <chrono>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include "dinamo/transformer_template.h"
#include "support/transformer_runs.h"

namespace dinamo {
namespace {

using testing::kBins;
using testing::RunObservation;
using testing::SmallOptions;

torch::nn::Sequential Block(std::int64_t in, std::int64_t out) {
  return torch::nn::Sequential(torch::nn::Linear(in, out),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})),
                               torch::nn::ReLU(), torch::nn::Linear(out, out));
}

// The model as DESIGN.md section 3 writes it, from libtorch's modules only.
struct ReferenceNetImpl : torch::nn::Module {
  explicit ReferenceNetImpl(const TransformerOptions& o) {
    const auto bins = static_cast<std::int64_t>(o.bins);
    content = register_module("content", Block(bins, o.width));
    time = register_module("time", Block(1, o.width));
    const auto layer = torch::nn::TransformerEncoderLayerOptions(o.width, o.heads)
                           .dim_feedforward(o.feedforward)
                           .dropout(o.dropout)
                           .activation(torch::kReLU);
    encoder = register_module(
        "encoder",
        torch::nn::TransformerEncoder(torch::nn::TransformerEncoderOptions(layer, o.layers)));
    mu_head = register_module("mu_head", Block(o.width, bins));
    sigma_head = register_module("sigma_head", Block(o.width, bins));
  }

  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& contents,
                                                  const torch::Tensor& times) {
    const auto tokens = content->forward(contents) + time->forward(times);
    const auto pooled = encoder->forward(tokens.transpose(0, 1)).mean(0);
    return {torch::softmax(mu_head->forward(pooled), -1),
            torch::softplus(sigma_head->forward(pooled))};
  }

  torch::nn::Sequential content{nullptr};
  torch::nn::Sequential time{nullptr};
  torch::nn::TransformerEncoder encoder{nullptr};
  torch::nn::Sequential mu_head{nullptr};
  torch::nn::Sequential sigma_head{nullptr};
};
TORCH_MODULE(ReferenceNet);

// libtorch's process-wide generator set to a seed's stream: what the reference draws from.
void SeedGlobalGenerator(std::uint64_t seed) {
  auto global = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(global.mutex());
  global.set_state(at::detail::createCPUGenerator(seed).get_state());
}

// The model's weights, read from its snapshot into a net made of libtorch's modules.
ReferenceNet WeightsOf(const TransformerModel& model) {
  std::stringstream snapshot;
  model.Save(snapshot);
  torch::serialize::InputArchive archive, net_archive;
  archive.load_from(snapshot);
  archive.read("net", net_archive);
  ReferenceNet net(model.options());
  net->load(net_archive);
  return net;
}

void ExpectSameWeights(ReferenceNet& expected, ReferenceNet& actual) {
  const auto want = expected->named_parameters();
  const auto got = actual->named_parameters();
  ASSERT_EQ(want.size(), got.size());
  for (const auto& w : want) {
    EXPECT_TRUE(torch::equal(w.value(), got[w.key()])) << w.key();
  }
}

// The batch the model trains on: its K most recent good runs, each with its own context.
struct Batch {
  torch::Tensor contents, times, targets;
};

Batch BatchOf(const TransformerModel& model) {
  const auto& o = model.options();
  const auto history = model.history();
  const auto k = static_cast<std::int64_t>(
      std::min(history.size(), static_cast<std::size_t>(o.batch_runs)));
  const std::int64_t m = o.context_runs;
  const auto b = static_cast<std::int64_t>(kBins);
  Batch batch{torch::empty({k, m, b}), torch::empty({k, m, 1}), torch::empty({k, b})};
  for (std::int64_t i = 0; i < k; ++i) {
    const GoodRun& target = history[history.size() - static_cast<std::size_t>(k - i)];
    const RunContext c = model.ContextFor(target.run);
    batch.contents[i].copy_(torch::tensor(c.contents).view({m, b}));
    batch.times[i].copy_(torch::tensor(c.times).view({m, 1}));
    batch.targets[i].copy_(torch::tensor(target.x));
  }
  return batch;
}

TEST(TransformerReference, ParametersAreNamedAndOrderedAsLibtorchs) {
  TransformerModel model(SmallOptions());
  ReferenceNet reference(SmallOptions());
  const auto ours = WeightsOf(model)->named_parameters();
  const auto theirs = reference->named_parameters();
  ASSERT_EQ(ours.size(), theirs.size());
  for (std::size_t i = 0; i < ours.size(); ++i) {
    EXPECT_EQ(ours[i].key(), theirs[i].key());
    EXPECT_EQ(ours[i].value().sizes(), theirs[i].value().sizes()) << theirs[i].key();
  }
}

TEST(TransformerReference, InitialWeightsAreLibtorchsForTheSeed) {
  const TransformerOptions o = SmallOptions();
  SeedGlobalGenerator(o.seed);
  ReferenceNet reference(o);

  TransformerModel model(o);
  auto ours = WeightsOf(model);
  ExpectSameWeights(reference, ours);
}

TEST(TransformerReference, EvalTemplateIsLibtorchs) {
  const TransformerOptions o = SmallOptions();
  TransformerModel model(o);
  for (std::int64_t run = 1; run <= 4; ++run) {
    ASSERT_TRUE(model.Record(run, RunObservation(run)));
  }
  auto reference = WeightsOf(model);
  reference->eval();

  const RunContext c = model.ContextFor(5);
  const std::int64_t m = o.context_runs;
  const auto [mu, sigma] =
      reference->forward(torch::tensor(c.contents).view({1, m, static_cast<std::int64_t>(kBins)}),
                         torch::tensor(c.times).view({1, m, 1}));
  Expectation e;
  model.Expect(5, e);
  for (std::size_t b = 0; b < kBins; ++b) {
    const auto i = static_cast<std::int64_t>(b);
    EXPECT_EQ(e.mu[b], mu[0][i].item<double>()) << "bin " << b;
    EXPECT_EQ(e.sigma_mu[b], sigma[0][i].item<double>()) << "bin " << b;
  }
}

// The dropout masks of a training step come from the model's generator exactly as libtorch's
// encoder takes them from the global one: the same loss, the same weights afterwards.
TEST(TransformerReference, TrainingStepsAreLibtorchs) {
  const TransformerOptions o = SmallOptions();
  TransformerModel model(o);
  for (std::int64_t run = 1; run <= 12; ++run) {
    ASSERT_TRUE(model.Record(run, RunObservation(run)));
  }
  const Batch batch = BatchOf(model);

  // After the model is built: building it draws from the global generator too (thrown away).
  SeedGlobalGenerator(o.seed);
  ReferenceNet reference(o);  // draws the initial weights, then the dropout masks
  torch::optim::AdamW optimizer(
      reference->parameters(),
      torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay));
  for (int step = 0; step < 3; ++step) {
    reference->train();
    const auto [mu, sigma] = reference->forward(batch.contents, batch.times);
    const auto var = sigma.square();
    const auto loss = (0.5 * (torch::log(var) + (batch.targets - mu).square() / var)).mean();
    optimizer.zero_grad();
    loss.backward();
    optimizer.step();
    EXPECT_EQ(model.TrainStep(), loss.item<double>()) << "step " << step;
  }
  auto ours = WeightsOf(model);
  ExpectSameWeights(reference, ours);
}

// A snapshot written while the encoder was libtorch's (the same archive, its net from
// libtorch's modules) loads, weights and all.
TEST(TransformerReference, ASnapshotOfLibtorchsEncoderLoads) {
  const TransformerOptions o = SmallOptions();
  TransformerModel saved(o);
  ASSERT_TRUE(saved.Record(1, RunObservation(1)));
  std::stringstream ours;
  saved.Save(ours);
  torch::serialize::InputArchive in;
  in.load_from(ours);

  SeedGlobalGenerator(99);
  ReferenceNet theirs(o);
  torch::serialize::OutputArchive out, net;
  theirs->save(net);
  out.write("net", net);
  for (const char* key : {"format", "shape", "generator", "history_runs", "history_contents",
                          "counters", "seconds"}) {
    torch::Tensor t;
    in.read(key, t);
    out.write(key, t);
  }
  torch::serialize::InputArchive optimizer_in;
  in.read("optimizer", optimizer_in);
  torch::optim::AdamW optimizer(theirs->parameters());
  optimizer.load(optimizer_in);
  torch::serialize::OutputArchive optimizer_out;
  optimizer.save(optimizer_out);
  out.write("optimizer", optimizer_out);
  std::stringstream snapshot;
  out.save_to(snapshot);

  TransformerModel loaded(o);
  loaded.Load(snapshot);
  auto weights = WeightsOf(loaded);
  ExpectSameWeights(theirs, weights);
  EXPECT_EQ(loaded.history().size(), 1u);
}

TEST(TransformerModel, ModelsTrainedOnTwoThreadsAtOnceMatchTrainingsOneAfterAnother) {
  TransformerOptions a = SmallOptions(), b = SmallOptions();
  a.max_steps = b.max_steps = 5;
  b.seed = 7;
  const auto train = [](const TransformerOptions& o) {
    auto model = std::make_unique<TransformerModel>(o);
    for (std::int64_t run = 1; run <= 4; ++run) {
      model->Record(run, RunObservation(run));
      model->Train();
    }
    return model;
  };
  const auto alone_a = train(a);
  const auto alone_b = train(b);

  std::unique_ptr<TransformerModel> together_a, together_b;
  std::thread other([&] { together_b = train(b); });
  together_a = train(a);
  other.join();

  Expectation want, got;
  alone_a->Expect(5, want);
  together_a->Expect(5, got);
  EXPECT_EQ(want.mu, got.mu);
  alone_b->Expect(5, want);
  together_b->Expect(5, got);
  EXPECT_EQ(want.mu, got.mu);
}

// A model is built and scores while another trains: nothing process-wide is held by training.
TEST(TransformerModel, ANewModelNeedNotWaitForAnotherModelsTraining) {
  TransformerOptions slow = SmallOptions();
  slow.patience = 200;
  slow.max_steps = 200;  // a second or more of training
  TransformerModel training(slow);
  ASSERT_TRUE(training.Record(1, RunObservation(1)));

  std::atomic<bool> started{false}, finished{false};
  std::thread worker([&] {
    started = true;
    training.Train();
    finished = true;
  });
  while (!started) {
    std::this_thread::yield();
  }
  // Lets the training get into its steps (it lasts seconds); the outcome does not hang on it.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));

  TransformerModel fresh(SmallOptions());
  Expectation e;
  fresh.Expect(1, e);
  const bool built_during_training = !finished;
  worker.join();
  EXPECT_TRUE(built_during_training);
  EXPECT_EQ(training.stats().last_steps, slow.max_steps);
}

}  // namespace
}  // namespace dinamo
