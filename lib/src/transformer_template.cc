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

// Dropout exactly as libtorch's (a mask drawn from Bernoulli(1 - p), scaled by 1 / (1 - p)),
// but from the model's own generator: libtorch's dropout draws from its one process-wide
// generator, which models trained on several threads would share.
torch::Tensor Dropout(const torch::Tensor& x, double p, bool training, at::Generator& generator) {
  if (!training || p == 0.0) {
    return x;
  }
  auto mask = torch::empty_like(x);
  mask.bernoulli_(1.0 - p, generator);
  mask.div_(1.0 - p);
  return x * mask;
}

// Multi-head self-attention, the computation of libtorch 1.13's MultiheadAttention (packed
// input projection, scaled dot products, dropout on the attention weights) with the dropout
// drawn from the model's generator. Parameters are named as libtorch names them.
struct SelfAttentionImpl : torch::nn::Module {
  SelfAttentionImpl(std::int64_t width, std::int64_t head_count) : heads(head_count) {
    in_proj_weight = register_parameter("in_proj_weight", torch::empty({3 * width, width}));
    in_proj_bias = register_parameter("in_proj_bias", torch::empty({3 * width}));
    out_proj = register_module("out_proj", torch::nn::Linear(width, width));
  }

  // x (M, N, d) -> (M, N, d).
  torch::Tensor forward(const torch::Tensor& x, double dropout, at::Generator& generator) {
    const auto runs = x.size(0);
    const auto batch = x.size(1);
    const auto width = x.size(2);
    const auto head_width = width / heads;
    const auto qkv = torch::nn::functional::linear(x, in_proj_weight, in_proj_bias).chunk(3, -1);
    const auto split = [&](const torch::Tensor& t) {
      return t.contiguous().view({runs, batch * heads, head_width}).transpose(0, 1);
    };
    const auto q = split(qkv[0] * (1 / std::sqrt(head_width)));
    const auto k = split(qkv[1]);
    const auto v = split(qkv[2]);

    auto weights = torch::softmax(torch::bmm(q, k.transpose(1, 2)), -1);
    weights = Dropout(weights, dropout, is_training(), generator);
    const auto attended =
        torch::bmm(weights, v).transpose(0, 1).contiguous().view({runs, batch, width});
    return out_proj->forward(attended);
  }

  std::int64_t heads;
  torch::Tensor in_proj_weight;
  torch::Tensor in_proj_bias;
  torch::nn::Linear out_proj{nullptr};
};
TORCH_MODULE(SelfAttention);

// One post-norm encoder layer, libtorch 1.13's TransformerEncoderLayer with ReLU, its modules
// named alike so that snapshots of either read into the other.
struct EncoderLayerImpl : torch::nn::Module {
  explicit EncoderLayerImpl(const TransformerOptions& o) : dropout_p(o.dropout) {
    const std::int64_t d = o.width;
    self_attn = register_module("self_attn", SelfAttention(d, o.heads));
    linear1 = register_module("linear1", torch::nn::Linear(d, o.feedforward));
    register_module("dropout", torch::nn::Dropout(o.dropout));  // layout only: see Dropout()
    linear2 = register_module("linear2", torch::nn::Linear(o.feedforward, d));
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    register_module("dropout1", torch::nn::Dropout(o.dropout));
    register_module("dropout2", torch::nn::Dropout(o.dropout));
  }

  torch::Tensor forward(const torch::Tensor& x, at::Generator& generator) {
    const bool training = is_training();
    const auto attended = self_attn->forward(x, dropout_p, generator);
    const auto y = norm1(x + Dropout(attended, dropout_p, training, generator));
    const auto hidden = Dropout(torch::relu(linear1(y)), dropout_p, training, generator);
    return norm2(y + Dropout(linear2(hidden), dropout_p, training, generator));
  }

  double dropout_p;
  SelfAttention self_attn{nullptr};
  torch::nn::Linear linear1{nullptr};
  torch::nn::Linear linear2{nullptr};
  torch::nn::LayerNorm norm1{nullptr};
  torch::nn::LayerNorm norm2{nullptr};
};
TORCH_MODULE(EncoderLayer);

struct EncoderImpl : torch::nn::Module {
  explicit EncoderImpl(const TransformerOptions& o) {
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < o.layers; ++i) {
      layers->push_back(EncoderLayer(o));
    }
  }

  torch::Tensor forward(torch::Tensor x, at::Generator& generator) {
    for (const auto& layer : *layers) {
      x = layer->as<EncoderLayerImpl>()->forward(x, generator);
    }
    return x;
  }

  torch::nn::ModuleList layers{nullptr};
};
TORCH_MODULE(Encoder);

// One decoder-free encoder that reads the context and emits the template and its uncertainty.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(const TransformerOptions& o) {
    const auto bins = static_cast<std::int64_t>(o.bins);
    content = register_module("content", Block(bins, o.width));
    time = register_module("time", Block(1, o.width));
    encoder = register_module("encoder", Encoder(o));
    mu_head = register_module("mu_head", Block(o.width, bins));
    sigma_head = register_module("sigma_head", Block(o.width, bins));
  }

  // contents (N, M, B), times (N, M, 1) -> mu (N, B), sigma_mu (N, B). The generator draws
  // the dropout masks in train mode.
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& contents,
                                                  const torch::Tensor& times,
                                                  at::Generator& generator) {
    const auto tokens = content->forward(contents) + time->forward(times);
    // Like libtorch 1.13's encoder (no batch_first), the layers take (M, N, d).
    const auto encoded = encoder->forward(tokens.transpose(0, 1), generator);
    const auto pooled = encoded.mean(0);
    return {torch::softmax(mu_head->forward(pooled), -1),
            torch::softplus(sigma_head->forward(pooled))};
  }

  torch::nn::Sequential content{nullptr};
  torch::nn::Sequential time{nullptr};
  Encoder encoder{nullptr};
  torch::nn::Sequential mu_head{nullptr};
  torch::nn::Sequential sigma_head{nullptr};
};
TORCH_MODULE(Net);

// The initial weights, drawn from the model's generator in the order and by the formulas of
// libtorch 1.13's constructors (whose own draws, from the process-wide generator, are
// overwritten here). That order keeps a seed's model, its scores and the snapshots written
// while the encoder was libtorch's exactly as they were.
class Initialiser {
 public:
  explicit Initialiser(at::Generator& generator) : generator_(generator) {}

  // The second Linear first: Block() builds its modules as the arguments of one call, and GCC
  // evaluates those from the last.
  void Block(torch::nn::Sequential& block) {
    Linear(*block[3]->as<torch::nn::Linear>());
    Linear(*block[0]->as<torch::nn::Linear>());
  }

  // libtorch's encoder builds one layer and clones it into each of its layers. A clone is a
  // module built afresh (drawing initial weights), whose children are cloned the same way, and
  // which then takes the original's weights: draws thrown away, but the stream moves on.
  void Layers(EncoderImpl& encoder) {
    auto& layers = *encoder.layers;
    auto& first = *layers[0]->as<EncoderLayer>();
    Layer(first);
    const auto weights = first.parameters();
    for (std::size_t i = 1; i < layers.size(); ++i) {
      const auto copies = layers[i]->as<EncoderLayer>()->parameters();
      for (std::size_t j = 0; j < copies.size(); ++j) {
        copies[j].copy_(weights[j]);
      }
    }
    Skip(static_cast<std::int64_t>(layers.size()) * DrawsOfAClone(first));
  }

 private:
  // Linear::reset_parameters: kaiming_uniform_(a = sqrt 5) for the weight, then the bias.
  void Linear(torch::nn::LinearImpl& linear) {
    const auto fan_in = linear.weight.size(1);
    const double gain = std::sqrt(2.0 / (1 + std::pow(std::sqrt(5), 2)));
    const double weight_bound = std::sqrt(3.0) * (gain / std::sqrt(fan_in));
    linear.weight.uniform_(-weight_bound, weight_bound, generator_);
    const double bias_bound = 1 / std::sqrt(fan_in);
    linear.bias.uniform_(-bias_bound, bias_bound, generator_);
  }

  // MultiheadAttention: out_proj as any Linear when it is built, then xavier_uniform_ for the
  // packed projection, then zero biases.
  void Attention(SelfAttentionImpl& attention) {
    Linear(*attention.out_proj);
    const auto& w = attention.in_proj_weight;
    const auto fans = static_cast<double>(w.size(0) + w.size(1));
    const double bound = std::sqrt(3.0) * std::sqrt(2.0 / fans);
    w.uniform_(-bound, bound, generator_);
    attention.in_proj_bias.zero_();
    attention.out_proj->bias.zero_();
  }

  void Layer(EncoderLayerImpl& layer) {
    Attention(*layer.self_attn);
    Linear(*layer.linear1);
    Linear(*layer.linear2);
  }

  static std::int64_t Draws(const torch::nn::LinearImpl& linear) {
    return linear.weight.numel() + linear.bias.numel();
  }
  static std::int64_t Draws(const SelfAttentionImpl& attention) {
    return Draws(*attention.out_proj) + attention.in_proj_weight.numel();
  }
  static std::int64_t Draws(const EncoderLayerImpl& layer) {
    return Draws(*layer.self_attn) + Draws(*layer.linear1) + Draws(*layer.linear2);
  }

  // The layer built afresh, then its children: the attention (itself, then its out_proj) and
  // the two Linear.
  static std::int64_t DrawsOfAClone(const EncoderLayerImpl& layer) {
    const auto& attention = *layer.self_attn;
    return Draws(layer) + Draws(attention) + Draws(*attention.out_proj) + Draws(*layer.linear1) +
           Draws(*layer.linear2);
  }

  // A uniform draw takes one number of the stream per element.
  void Skip(std::int64_t draws) { torch::empty({draws}).uniform_(0.0, 1.0, generator_); }

  at::Generator& generator_;
};

void Initialise(Net& net, at::Generator& generator) {
  torch::NoGradGuard no_grad;
  Initialiser init(generator);
  init.Block(net->content);
  init.Block(net->time);
  init.Layers(*net->encoder);
  init.Block(net->mu_head);
  init.Block(net->sigma_head);
}

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
      : options(o), generator(at::detail::createCPUGenerator(o.seed)) {
    torch::set_num_threads(std::max(1, o.threads));
    UseOneBlasThread();
    KeepFreedMemory();
    net = Net(o);
    Initialise(net, generator);
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
    auto [mu, sigma] = net->forward(batch.contents, batch.times, generator);
    return GaussianNllTensor(batch.targets, mu, sigma.square(), options.variance_floor);
  }

  // One optimiser step in train mode.
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

  torch::Tensor GeneratorState() const {
    std::lock_guard<std::mutex> lock(generator.mutex());
    return generator.get_state();
  }
  void SetGeneratorState(const torch::Tensor& state) {
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(state);
  }
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
  // Draws the initial weights and the dropout masks: a model's own, so that models train on
  // several threads at once and a snapshot carries it.
  mutable at::Generator generator;
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
  archive.write("generator", GeneratorState());

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
  torch::Tensor generator_state;
  archive.read("generator", generator_state);
  SetGeneratorState(generator_state);

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

  const auto [mu, sigma] = impl_->net->forward(contents, times, impl_->generator);
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
  while (stopping.Continue(impl_->Step(batch))) {
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
  return impl_->Step(impl_->MakeBatch());
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
