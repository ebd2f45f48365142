// The parts of DINAMO-ML that need no libtorch: the model's input and the stopping rule.

#include <algorithm>
#include <cassert>

#include "dinamo/transformer_template.h"

namespace dinamo {

void FillContext(std::span<const GoodRun> history, std::int64_t t, std::size_t context_runs,
                 std::size_t bins, std::span<float> contents, std::span<float> times) {
  assert(contents.size() == context_runs * bins && times.size() == context_runs);

  // Runs at or after t are not known when t is scored: the context ends before the first.
  const auto end = std::lower_bound(history.begin(), history.end(), t,
                                    [](const GoodRun& g, std::int64_t v) { return g.run < v; });
  const auto available = static_cast<std::size_t>(end - history.begin());
  const std::size_t used = std::min(available, context_runs);
  const std::size_t padding = context_runs - used;

  std::fill(contents.begin(), contents.begin() + padding * bins, kPadContent);
  std::fill(times.begin(), times.begin() + padding, kPadTime);

  auto run = end - static_cast<std::ptrdiff_t>(used);
  for (std::size_t row = padding; row < context_runs; ++row, ++run) {
    assert(run->x.size() == bins);
    std::copy(run->x.begin(), run->x.end(), contents.begin() + row * bins);
    times[row] = static_cast<float>(run->run - t);
  }
}

bool EarlyStopping::Continue(double loss) {
  ++steps_;
  if (loss < best_) {
    best_ = loss;
    since_best_ = 0;
  } else {
    ++since_best_;
  }
  return since_best_ < patience_ && steps_ < max_steps_;
}

}  // namespace dinamo
