// DINAMO-ML with libtorch. The only translation unit of the library that includes torch.

#include "dinamo/transformer_template.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <istream>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>

#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>
#include <dlfcn.h>
#include <malloc.h>

namespace dinamo {

namespace {

constexpr std::int64_t kSnapshotFormat = 1;

// Linear(in -> out), LayerNorm(out), ReLU, Linear(out -> out): the embeddings and the heads.
torch::nn::Sequential Block(std::int64_t in, std::int64_t out) {
  return torch::nn::Sequential(torch::nn::Linear(in, out),
                               torch::nn::LayerNorm(torch::nn::LayerNormOptions({out})),
                               torch::nn::ReLU(), torch::nn::Linear(out, out));
}

// One decoder-free encoder that reads the context and emits the template and its uncertainty.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(const TransformerOptions& o) {
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

  // contents (N, M, B), times (N, M, 1) -> mu (N, B), sigma_mu (N, B).
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& contents,
                                                  const torch::Tensor& times) {
    const auto tokens = content->forward(contents) + time->forward(times);
    // The C++ encoder of libtorch 1.13 has no batch_first: it wants (M, N, d).
    const auto encoded = encoder->forward(tokens.transpose(0, 1));
    const auto pooled = encoded.mean(0);
    return {torch::softmax(mu_head->forward(pooled), -1),
            torch::softplus(sigma_head->forward(pooled))};
  }

  torch::nn::Sequential content{nullptr};
  torch::nn::Sequential time{nullptr};
  torch::nn::TransformerEncoder encoder{nullptr};
  torch::nn::Sequential mu_head{nullptr};
  torch::nn::Sequential sigma_head{nullptr};
};
TORCH_MODULE(Net);

// libtorch draws dropout masks and initial weights from its one process-wide CPU generator.
// Each model owns its own stream: while a model initialises or trains, its stream is installed
// into the global generator under a process-wide lock and taken back afterwards. So models do
// not disturb each other, a snapshot carries the stream, and a restored model draws the same
// masks. The price: trainings of different models in one process do not overlap.
// TODO(#5): draw dropout from a per-model generator (an own attention layer) so that they can.
std::mutex& GeneratorLock() {
  static std::mutex lock;
  return lock;
}

class StreamScope {
 public:
  explicit StreamScope(torch::Tensor& state)
      : lock_(GeneratorLock()), state_(state), generator_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> guard(generator_.mutex());
    saved_ = generator_.get_state();
    generator_.set_state(state_);
  }
  ~StreamScope() {
    std::lock_guard<std::mutex> guard(generator_.mutex());
    state_ = generator_.get_state();
    generator_.set_state(saved_);
  }
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  std::lock_guard<std::mutex> lock_;
  torch::Tensor& state_;
  at::Generator generator_;
  torch::Tensor saved_;
};

// torch.nn.functional.gaussian_nll_loss(mu, x, var, full=False, eps=floor, reduction="mean"),
// including its clamp: the floor bounds the value, the gradient passes as if unclamped.
torch::Tensor GaussianNllTensor(const torch::Tensor& x, const torch::Tensor& mu,
                                const torch::Tensor& var, double floor) {
  auto v = var.clone();
  {
    torch::NoGradGuard no_grad;
    v.clamp_min_(floor);
  }
  return (0.5 * (torch::log(v) + (x - mu).square() / v)).mean();
}

// torch::set_num_threads sizes libtorch's own pool only. The pthread build of OpenBLAS keeps a
// pool of its own (one thread per core), whose threads spin on sched_yield around every one of
// this model's tiny matrix products: on a busy 2-core machine that costs more than it gives.
// And they are started when the library loads, by the main thread, so they would run at the
// event loop's priority whatever the priority of the training that uses them. So BLAS runs on
// the calling thread; libtorch's intra-op threads (started by the thread that trains, so with
// its priority) are what TransformerOptions::threads sizes. Looked up at run time, as libtorch
// may run on another BLAS.
void UseOneBlasThread() {
  using SetThreads = void (*)(int);
  void* symbol = dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
  if (symbol != nullptr) {
    reinterpret_cast<SetThreads>(symbol)(1);
  }
}

// Every training step allocates and frees the same few hundred tensors, some above glibc's
// mmap threshold; with its defaults the freed memory goes back to the kernel and comes back as
// fresh zeroed pages at the next step (a fifth of a step's time went to page faults). Keep it:
// the process then holds the peak of what it used, a few MB per model being trained.
void KeepFreedMemory() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 16 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
  });
}

struct Batch {
  torch::Tensor contents;  // (K, M, B)
  torch::Tensor times;     // (K, M, 1)
  torch::Tensor targets;   // (K, B)
};

std::int64_t ToInt(const torch::Tensor& t) { return t.item<std::int64_t>(); }

const TransformerOptions& Validated(const TransformerOptions& o) {
  if (o.bins == 0 || o.width <= 0 || o.heads <= 0 || o.width % o.heads != 0 ||
      o.context_runs <= 0 || o.batch_runs <= 0 || o.layers <= 0 || o.patience <= 0 ||
      o.max_steps <= 0) {
    throw std::invalid_argument("transformer template: invalid options");
  }
  return o;
}

}  // namespace

double GaussianNll(std::span<const double> x, std::span<const double> mu,
                   std::span<const double> var, double floor) {
  const auto n = static_cast<std::int64_t>(x.size());
  const auto make = [n](std::span<const double> v) {
    return torch::from_blob(const_cast<double*>(v.data()), {n}, torch::kFloat64);
  };
  return GaussianNllTensor(make(x), make(mu), make(var), floor).item<double>();
}

struct TransformerModel::Impl {
  explicit Impl(const TransformerOptions& o)
      : options(o), generator_state(at::detail::createCPUGenerator(o.seed).get_state()) {
    torch::set_num_threads(std::max(1, o.threads));
    UseOneBlasThread();
    KeepFreedMemory();
    {
      StreamScope stream(generator_state);
      net = Net(o);
    }
    net->eval();
    optimizer = std::make_unique<torch::optim::AdamW>(
        net->parameters(),
        torch::optim::AdamWOptions(o.learning_rate).weight_decay(o.weight_decay));
  }

  std::size_t bins() const { return options.bins; }
  std::size_t context() const { return static_cast<std::size_t>(options.context_runs); }

  // Only the last K targets and the M runs before the oldest of them are ever read.
  void Trim() {
    const auto keep = static_cast<std::size_t>(options.batch_runs + options.context_runs);
    if (history.size() > keep) {
      history.erase(history.begin(), history.end() - static_cast<std::ptrdiff_t>(keep));
    }
  }

  void Fill(std::int64_t t, float* contents, float* times) const {
    const std::size_t m = context();
    FillContext(history, t, m, bins(), {contents, m * bins()}, {times, m});
  }

  Batch MakeBatch() const {
    const auto k = static_cast<std::int64_t>(
        std::min(history.size(), static_cast<std::size_t>(options.batch_runs)));
    const auto m = static_cast<std::int64_t>(context());
    const auto b = static_cast<std::int64_t>(bins());
    Batch batch{torch::empty({k, m, b}), torch::empty({k, m, 1}), torch::empty({k, b})};
    for (std::int64_t i = 0; i < k; ++i) {
      const GoodRun& target = history[history.size() - static_cast<std::size_t>(k - i)];
      Fill(target.run, batch.contents[i].data_ptr<float>(), batch.times[i].data_ptr<float>());
      std::copy(target.x.begin(), target.x.end(), batch.targets[i].data_ptr<float>());
    }
    return batch;
  }

  torch::Tensor Loss(const Batch& batch) {
    auto [mu, sigma] = net->forward(batch.contents, batch.times);
    return GaussianNllTensor(batch.targets, mu, sigma.square(), options.variance_floor);
  }

  // One optimiser step in train mode; the caller holds the model's generator stream.
  double Step(const Batch& batch) {
    net->train();
    const auto loss = Loss(batch);
    optimizer->zero_grad();
    loss.backward();
    optimizer->step();
    net->eval();
    return loss.item<double>();
  }

  void Save(std::ostream& out) const;
  void Load(std::istream& in);
  std::vector<std::int64_t> Shape() const {
    const auto& o = options;
    return {static_cast<std::int64_t>(o.bins),
            o.width,
            o.context_runs,
            o.batch_runs,
            o.layers,
            o.heads,
            o.feedforward};
  }

  TransformerOptions options;
  torch::Tensor generator_state;
  Net net{nullptr};
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::vector<GoodRun> history;  // increasing runs, at most K + M
  std::uint64_t learned = 0;
  TrainingStats stats;
};

void TransformerModel::Impl::Save(std::ostream& out) const {
  torch::serialize::OutputArchive archive;
  archive.write("format", torch::tensor(kSnapshotFormat));
  archive.write("shape", torch::tensor(Shape()));

  torch::serialize::OutputArchive net_archive;
  net->save(net_archive);
  archive.write("net", net_archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer->save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  archive.write("generator", generator_state);

  const auto n = static_cast<std::int64_t>(history.size());
  auto runs = torch::empty({n}, torch::kInt64);
  auto contents = torch::empty({n, static_cast<std::int64_t>(bins())});
  for (std::int64_t i = 0; i < n; ++i) {
    const GoodRun& g = history[static_cast<std::size_t>(i)];
    runs[i] = g.run;
    std::copy(g.x.begin(), g.x.end(), contents[i].data_ptr<float>());
  }
  archive.write("history_runs", runs);
  archive.write("history_contents", contents);
  archive.write("counters",
                torch::tensor(std::vector<std::int64_t>{
                    static_cast<std::int64_t>(learned), static_cast<std::int64_t>(stats.trainings),
                    static_cast<std::int64_t>(stats.total_steps)}));
  archive.write("seconds", torch::tensor(stats.total_seconds, torch::kFloat64));
  archive.save_to(out);
}

void TransformerModel::Impl::Load(std::istream& in) {
  torch::serialize::InputArchive archive;
  archive.load_from(in);
  torch::Tensor format, shape;
  archive.read("format", format);
  archive.read("shape", shape);
  if (ToInt(format) != kSnapshotFormat) {
    throw std::runtime_error("transformer snapshot: format " + std::to_string(ToInt(format)) +
                             ", expected " + std::to_string(kSnapshotFormat));
  }
  const auto expected = Shape();
  if (shape.numel() != static_cast<std::int64_t>(expected.size()) ||
      !std::equal(expected.begin(), expected.end(), shape.data_ptr<std::int64_t>())) {
    throw std::runtime_error("transformer snapshot: made for other bins or architecture");
  }

  torch::serialize::InputArchive net_archive;
  archive.read("net", net_archive);
  net->load(net_archive);
  torch::serialize::InputArchive optimizer_archive;
  archive.read("optimizer", optimizer_archive);
  optimizer->load(optimizer_archive);
  torch::Tensor generator;
  archive.read("generator", generator);
  generator_state = generator.clone();

  torch::Tensor runs, contents, counters, seconds;
  archive.read("history_runs", runs);
  archive.read("history_contents", contents);
  archive.read("counters", counters);
  archive.read("seconds", seconds);
  history.clear();
  for (std::int64_t i = 0; i < runs.numel(); ++i) {
    const auto row = contents[i].contiguous();
    const float* x = row.data_ptr<float>();
    history.push_back({runs[i].item<std::int64_t>(), std::vector<float>(x, x + bins())});
  }
  learned = static_cast<std::uint64_t>(counters[0].item<std::int64_t>());
  stats = {};
  stats.trainings = static_cast<std::uint64_t>(counters[1].item<std::int64_t>());
  stats.total_steps = static_cast<std::uint64_t>(counters[2].item<std::int64_t>());
  stats.total_seconds = seconds.item<double>();
}

TransformerModel::TransformerModel(const TransformerOptions& options)
    : impl_(std::make_unique<Impl>(Validated(options))) {}

TransformerModel::~TransformerModel() = default;

std::size_t TransformerModel::bins() const { return impl_->bins(); }

void TransformerModel::Expect(std::int64_t run, Expectation& out) const {
  torch::NoGradGuard no_grad;
  const auto m = static_cast<std::int64_t>(impl_->context());
  const auto b = static_cast<std::int64_t>(bins());
  auto contents = torch::empty({1, m, b});
  auto times = torch::empty({1, m, 1});
  impl_->Fill(run, contents.data_ptr<float>(), times.data_ptr<float>());

  const auto [mu, sigma] = impl_->net->forward(contents, times);
  const auto mu64 = mu.to(torch::kFloat64).contiguous();
  const auto sigma64 = sigma.to(torch::kFloat64).contiguous();
  out.mu.assign(mu64.data_ptr<double>(), mu64.data_ptr<double>() + b);
  out.sigma_mu.assign(sigma64.data_ptr<double>(), sigma64.data_ptr<double>() + b);
  out.integral = 0.0;  // no template integral: scoring never debiases against it
}

bool TransformerModel::Record(std::int64_t run, const Observation& obs) {
  if (obs.empty() || obs.bins() != bins()) {
    return false;
  }
  if (!impl_->history.empty() && run <= impl_->history.back().run) {
    return false;
  }
  impl_->history.push_back({run, std::vector<float>(obs.x.begin(), obs.x.end())});
  impl_->Trim();
  ++impl_->learned;
  return true;
}

std::span<const GoodRun> TransformerModel::history() const { return impl_->history; }

bool TransformerModel::ReplaceHistory(std::vector<GoodRun> runs, std::uint64_t learned_runs) {
  for (std::size_t i = 0; i < runs.size(); ++i) {
    if (runs[i].x.size() != bins() || (i > 0 && runs[i].run <= runs[i - 1].run)) {
      return false;
    }
  }
  impl_->history = std::move(runs);
  impl_->Trim();
  impl_->learned = learned_runs;
  return true;
}

TrainingStats TransformerModel::Train() {
  TrainingStats& stats = impl_->stats;
  stats.last_steps = 0;
  stats.last_loss = 0.0;
  stats.last_seconds = 0.0;
  if (impl_->history.empty()) {
    return stats;
  }

  const auto start = std::chrono::steady_clock::now();
  const Batch batch = impl_->MakeBatch();
  EarlyStopping stopping(impl_->options.patience, impl_->options.max_steps);
  {
    StreamScope stream(impl_->generator_state);
    while (stopping.Continue(impl_->Step(batch))) {
    }
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

  stats.last_steps = stopping.steps();
  stats.last_loss = stopping.best();
  stats.last_seconds = elapsed.count();
  ++stats.trainings;
  stats.total_steps += static_cast<std::uint64_t>(stopping.steps());
  stats.total_seconds += elapsed.count();
  return stats;
}

double TransformerModel::TrainStep() {
  if (impl_->history.empty()) {
    return std::nan("");
  }
  const Batch batch = impl_->MakeBatch();
  StreamScope stream(impl_->generator_state);
  return impl_->Step(batch);
}

double TransformerModel::BatchLoss() const {
  if (impl_->history.empty()) {
    return std::nan("");
  }
  torch::NoGradGuard no_grad;
  return impl_->Loss(impl_->MakeBatch()).item<double>();
}

bool TransformerModel::Learn(std::int64_t run, const Observation& obs) {
  if (!Record(run, obs)) {
    return false;
  }
  Train();
  return true;
}

std::uint64_t TransformerModel::learned_runs() const { return impl_->learned; }

RunContext TransformerModel::ContextFor(std::int64_t run) const {
  RunContext c;
  c.contents.resize(impl_->context() * bins());
  c.times.resize(impl_->context());
  impl_->Fill(run, c.contents.data(), c.times.data());
  return c;
}

const TrainingStats& TransformerModel::stats() const { return impl_->stats; }

const TransformerOptions& TransformerModel::options() const { return impl_->options; }

void TransformerModel::Save(std::ostream& out) const {
  try {
    impl_->Save(out);
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("transformer snapshot: ") + e.what_without_backtrace());
  }
}

void TransformerModel::Load(std::istream& in) {
  // Into a fresh model first: a snapshot that fails half-way leaves this one untouched.
  auto fresh = std::make_unique<Impl>(impl_->options);
  try {
    fresh->Load(in);
  } catch (const c10::Error& e) {
    throw std::runtime_error(std::string("transformer snapshot: ") + e.what_without_backtrace());
  }
  impl_ = std::move(fresh);
}

std::unique_ptr<TransformerModel> TransformerModel::CloneTransformer() const {
  std::stringstream buffer;
  Save(buffer);
  auto copy = std::make_unique<TransformerModel>(impl_->options);
  copy->Load(buffer);
  copy->impl_->stats = impl_->stats;
  return copy;
}

std::unique_ptr<TemplateModel> TransformerModel::Clone() const { return CloneTransformer(); }

}  // namespace dinamo
