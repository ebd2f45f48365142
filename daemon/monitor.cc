#include "monitor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include <spdlog/spdlog.h>

#include "dinamo/score.h"

namespace dinamo::daemon {
namespace {

constexpr std::array<std::string_view, 17> kReasons = {
    "frame_count",       "oversized",        "empty_body",     "malformed",    "empty_name",
    "topic_mismatch",    "run_unset",        "no_counts",      "nan_count",    "infinite_count",
    "negative_count",    "bad_axes",         "shape_mismatch", "run_repeated", "run_out_of_order",
    "run_already_final", "transport_dropped"};

std::span<const double> CountsOf(const v1::Histogram& h) {
  return {h.counts().data(), static_cast<std::size_t>(h.counts_size())};
}

Rejection Refuse(std::string reason, std::string detail, std::string histogram) {
  return Rejection{std::move(reason), std::move(detail), std::move(histogram)};
}

// The reason label for counts that CheckCounts refused.
std::string CountsReason(const v1::Histogram& h) {
  if (h.counts().empty()) {
    return "no_counts";
  }
  for (double c : h.counts()) {
    if (std::isnan(c)) {
      return "nan_count";
    }
    if (std::isinf(c)) {
      return "infinite_count";
    }
    if (c < 0.0) {
      return "negative_count";
    }
  }
  return "bad_counts";
}

// The binning as the template keeps it: the message's axes, or one plain axis when it sent none.
std::vector<v1::Axis> ShapeOf(const v1::Histogram& h) {
  std::vector<v1::Axis> axes(h.axes().begin(), h.axes().end());
  if (axes.empty()) {
    v1::Axis axis;
    axis.set_bins(static_cast<std::uint32_t>(h.counts_size()));
    axes.push_back(axis);
  }
  return axes;
}

bool SameBinning(const std::vector<v1::Axis>& a, const std::vector<v1::Axis>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].bins() != b[i].bins() || a[i].low() != b[i].low() || a[i].high() != b[i].high()) {
      return false;
    }
  }
  return true;
}

std::unique_ptr<TemplateModel> MakeModel(std::size_t bins, const HistogramSettings& s) {
  if (s.method != "ewma") {
    if (const ModelFactory* factory = FindModelFactory(s.method)) {
      return (*factory)(bins, s);
    }
  }
  return std::make_unique<EwmaModel>(bins, s.alpha);
}

v1::Severity SeverityOf(double s, const HistogramSettings& settings) {
  if (s > settings.threshold) {
    return v1::SEVERITY_MAJOR;
  }
  if (settings.warning_threshold && s > *settings.warning_threshold) {
    return v1::SEVERITY_MINOR;
  }
  return v1::SEVERITY_NONE;
}

}  // namespace

struct Monitor::Track {
  std::string name;
  std::vector<v1::Axis> axes;
  std::unique_ptr<TemplateModel> model;
  std::uint64_t generation = 0;  // of the settings applied to the model
  const HistogramSettings* settings = nullptr;
  std::uint64_t last_final_run = 0;
  std::uint64_t last_run = 0;
  std::vector<double> last_pulls;
  v1::AlarmRecord alarm;
};

std::span<const std::string_view> RejectionReasons() { return kReasons; }

Monitor::Monitor(SettingsResolver& settings) : settings_(settings) {}

Monitor::~Monitor() = default;

MonitorResult Monitor::OnMessage(std::span<const std::string_view> frames,
                                 std::int64_t now_unix_ns) {
  MonitorResult result;
  const std::string topic = frames.empty() ? std::string() : std::string(frames[0]);
  if (frames.size() != 2) {
    result.rejection =
        Refuse("frame_count",
               "expected 2 frames (topic, body), got " + std::to_string(frames.size()), topic);
    return result;
  }
  const std::size_t size = frames[0].size() + frames[1].size();
  const std::size_t limit = settings_.config().input_max_message_bytes;
  if (size > limit) {
    result.rejection = Refuse(
        "oversized",
        std::to_string(size) + " bytes, more than input.max_message_bytes=" + std::to_string(limit),
        topic);
    return result;
  }
  if (frames[1].empty()) {
    result.rejection = Refuse("empty_body", "the body frame is empty", topic);
    return result;
  }
  parsed_.Clear();
  if (!parsed_.ParseFromArray(frames[1].data(), static_cast<int>(frames[1].size()))) {
    result.rejection = Refuse("malformed", "body is not a dinamo.v1.Histogram", topic);
    return result;
  }
  return OnHistogram(frames[0], parsed_, now_unix_ns);
}

std::optional<Rejection> Monitor::Check(std::string_view topic, const v1::Histogram& h) const {
  const std::string& name = h.name();
  if (name.empty()) {
    return Refuse("empty_name", "the histogram has no name", std::string(topic));
  }
  if (topic != name) {
    return Refuse("topic_mismatch", "topic '" + std::string(topic) + "' differs from the name",
                  name);
  }
  if (h.run() == 0) {
    return Refuse("run_unset", "run 0 (unset)", name);
  }
  if (auto why = CheckCounts(CountsOf(h))) {
    return Refuse(CountsReason(h), *why, name);
  }
  std::uint64_t product = 1;
  for (const v1::Axis& axis : h.axes()) {
    if (axis.bins() == 0) {
      return Refuse("bad_axes", "an axis has 0 bins", name);
    }
    product *= axis.bins();
    if (product > static_cast<std::uint64_t>(h.counts_size())) {
      break;
    }
  }
  if (h.axes_size() > 0 && product != static_cast<std::uint64_t>(h.counts_size())) {
    return Refuse("shape_mismatch",
                  std::to_string(h.counts_size()) + " counts for axes of " +
                      std::to_string(product) + (product > 1 ? " bins or more" : " bins"),
                  name);
  }

  const auto it = tracks_.find(name);
  if (it == tracks_.end()) {
    return std::nullopt;
  }
  const std::uint64_t last_final = it->second->last_final_run;
  if (h.final() && h.run() <= last_final) {
    return Refuse(
        h.run() == last_final ? "run_repeated" : "run_out_of_order",
        "final run " + std::to_string(h.run()) + " after final run " + std::to_string(last_final),
        name);
  }
  if (!h.final() && h.run() <= last_final) {
    return Refuse("run_already_final",
                  "non-final run " + std::to_string(h.run()) + ", run " +
                      std::to_string(last_final) + " is already final",
                  name);
  }
  return std::nullopt;
}

Monitor::Track& Monitor::TrackFor(const v1::Histogram& h, std::int64_t now_unix_ns,
                                  MonitorResult& result) {
  auto it = tracks_.find(h.name());
  std::vector<v1::Axis> shape = ShapeOf(h);
  if (it == tracks_.end()) {
    auto track = std::make_unique<Track>();
    track->name = h.name();
    track->axes = std::move(shape);
    track->settings = &settings_.For(h.name());
    track->generation = generation_;
    track->model = MakeModel(h.counts_size(), *track->settings);
    track->alarm.set_state(v1::ALARM_STATE_NORMAL);
    spdlog::debug("template created histogram={} bins={} method={}", h.name(), h.counts_size(),
                  track->model->method());
    return *tracks_.emplace(h.name(), std::move(track)).first->second;
  }

  Track& track = *it->second;
  ApplySettings(track);
  if (!SameBinning(track.axes, shape)) {
    spdlog::info("template reset histogram={} reason=binning_changed bins={}->{}", h.name(),
                 track.model->bins(), h.counts_size());
    track.axes = std::move(shape);
    track.model = MakeModel(h.counts_size(), *track.settings);
    track.last_pulls.clear();
    v1::Alarm alarm;
    alarm.set_histogram(h.name());
    alarm.set_run(h.run());
    alarm.set_event(v1::ALARM_EVENT_REBASELINED);
    alarm.set_state(v1::ALARM_STATE_NORMAL);
    alarm.set_severity(v1::SEVERITY_UNDEFINED);
    alarm.set_time_unix_ns(now_unix_ns);
    alarm.set_comment("binning changed: template reset");
    track.alarm.Clear();
    track.alarm.set_state(v1::ALARM_STATE_NORMAL);
    result.reset_alarm = std::move(alarm);
  }
  return track;
}

void Monitor::ApplySettings(Track& track) {
  if (track.generation == generation_) {
    return;
  }
  track.settings = &settings_.For(track.name);
  track.generation = generation_;
  if (track.settings->method != track.model->method()) {
    spdlog::warn(
        "method change ignored histogram={} method={} configured={} "
        "(takes effect when the template is reset)",
        track.name, track.model->method(), track.settings->method);
  }
  if (auto* ewma = dynamic_cast<EwmaModel*>(track.model.get())) {
    ewma->mutable_state().alpha = track.settings->alpha;
  }
}

bool Monitor::ShouldLearn(const v1::Histogram& h, const HistogramSettings& s, bool warmup,
                          bool judgeable, bool anomalous) const {
  if (!h.final() || !judgeable) {
    return false;
  }
  if (h.label() == v1::LABEL_GOOD) {
    return true;
  }
  if (h.label() == v1::LABEL_BAD) {
    return false;
  }
  switch (s.auto_accept) {
    case AutoAccept::kAlways:
      return true;
    case AutoAccept::kNever:
      return false;
    case AutoAccept::kBelowThreshold:
      // A template still warming up cannot judge; it learns from every run not called bad.
      return warmup || !anomalous;
  }
  return false;
}

void Monitor::FillPulls(v1::Verdict& verdict, const Expectation& expected) const {
  const std::size_t bins = pulls_.size();
  const std::size_t n = std::min(kVerdictPulls, bins);
  std::vector<std::uint32_t> order(bins);
  std::iota(order.begin(), order.end(), 0u);
  const auto magnitude = [this](std::uint32_t b) {
    const double p = std::abs(pulls_[b]);
    return std::isnan(p) ? -1.0 : p;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n), order.end(),
                    [&](std::uint32_t a, std::uint32_t b) {
                      return magnitude(a) > magnitude(b) || (magnitude(a) == magnitude(b) && a < b);
                    });
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t b = order[i];
    v1::Pull* pull = verdict.add_pulls();
    pull->set_bin(b);
    pull->set_pull(pulls_[b]);
    pull->set_observed(obs_.x[b]);
    pull->set_expected(expected.mu[b]);
    pull->set_sigma(std::sqrt(obs_.var_x[b] + expected.sigma_mu[b] * expected.sigma_mu[b]));
  }
}

std::optional<v1::Alarm> Monitor::UpdateAlarm(Track& track, const v1::Verdict& verdict,
                                              std::int64_t now_unix_ns) const {
  v1::AlarmRecord& a = track.alarm;
  const v1::Severity severity = verdict.severity();
  if (severity == v1::SEVERITY_UNDEFINED) {
    return std::nullopt;  // cannot tell: the alarm stays where it is
  }
  const bool active =
      a.state() == v1::ALARM_STATE_UNACKNOWLEDGED || a.state() == v1::ALARM_STATE_ACKNOWLEDGED;
  v1::AlarmEvent event = v1::ALARM_EVENT_UNSPECIFIED;
  if (severity == v1::SEVERITY_MAJOR) {
    a.set_consecutive_anomalous(a.consecutive_anomalous() + 1);
    if (!active) {
      event = v1::ALARM_EVENT_RAISED;
      a.set_state(v1::ALARM_STATE_UNACKNOWLEDGED);
      a.set_raised_unix_ns(now_unix_ns);
    }
  } else {
    a.set_consecutive_anomalous(0);
    if (active) {
      // TODO(#labels-and-alarms): latch as RETURNED_UNACKNOWLEDGED once acknowledging exists.
      event = v1::ALARM_EVENT_CLEARED;
      a.set_state(v1::ALARM_STATE_NORMAL);
    }
  }
  a.set_severity(severity);
  a.set_run(verdict.run());
  if (event == v1::ALARM_EVENT_UNSPECIFIED) {
    return std::nullopt;
  }

  v1::Alarm alarm;
  alarm.set_histogram(track.name);
  alarm.set_run(verdict.run());
  alarm.set_state(a.state());
  alarm.set_severity(severity);
  *alarm.mutable_verdict() = verdict;
  alarm.set_event(event);
  alarm.set_time_unix_ns(now_unix_ns);
  alarm.set_raised_unix_ns(event == v1::ALARM_EVENT_RAISED ? a.raised_unix_ns() : 0);
  alarm.set_consecutive_anomalous(a.consecutive_anomalous());
  if (event == v1::ALARM_EVENT_CLEARED) {
    a.set_raised_unix_ns(0);
  }
  spdlog::info("alarm {} histogram={} run={} s={:.3f} threshold={}",
               event == v1::ALARM_EVENT_RAISED ? "raised" : "cleared", track.name, verdict.run(),
               verdict.log_reduced_chi2(), verdict.threshold());
  return alarm;
}

MonitorResult Monitor::OnHistogram(std::string_view topic, const v1::Histogram& h,
                                   std::int64_t now_unix_ns) {
  MonitorResult result;
  if (auto rejection = Check(topic, h)) {
    result.rejection = std::move(rejection);
    return result;
  }

  Track& track = TrackFor(h, now_unix_ns, result);
  const HistogramSettings& s = *track.settings;
  TemplateModel& model = *track.model;
  const auto run = static_cast<std::int64_t>(h.run());

  Normalise(CountsOf(h), obs_);
  pulls_.resize(obs_.bins());
  const Score score = model.ScoreRun(run, obs_, pulls_);
  model.Expect(run, expected_);

  const bool warmup = model.learned_runs() < s.warmup_runs;
  const bool judgeable = !obs_.empty() && obs_.integral >= s.min_entries;
  const bool anomalous = score.Anomalous(s.threshold);

  v1::Verdict& v = result.verdict.emplace();
  v.set_histogram(h.name());
  v.set_run(h.run());
  v.set_chi2(score.chi2);
  v.set_log_reduced_chi2(score.log_reduced_chi2);
  v.set_threshold(s.threshold);
  v.set_anomalous(anomalous);
  v.set_warmup(warmup);
  v.set_method(std::string(model.method()));
  FillPulls(v, expected_);
  v.set_time_unix_ns(now_unix_ns);
  v.set_histogram_time_unix_ns(h.time_unix_ns());
  v.set_final(h.final());
  v.set_severity(warmup || !judgeable ? v1::SEVERITY_UNDEFINED
                                      : SeverityOf(score.log_reduced_chi2, s));
  v.set_histogram_sequence(h.sequence());
  v.set_integral(obs_.integral);
  v.set_bins(static_cast<std::uint32_t>(obs_.bins()));
  if (s.warning_threshold) {
    v.set_warning_threshold(*s.warning_threshold);
  }

  // Learning after scoring, as in the paper.
  if (ShouldLearn(h, s, warmup, judgeable, anomalous)) {
    v.set_learned(model.Learn(run, obs_));
  }

  track.last_run = h.run();
  track.last_pulls = pulls_;
  if (h.final()) {
    track.last_final_run = h.run();
  }
  result.alarm = UpdateAlarm(track, v, now_unix_ns);
  return result;
}

void Monitor::ConfigChanged() { ++generation_; }

std::optional<v1::TemplateView> Monitor::Template(const std::string& histogram) const {
  const auto it = tracks_.find(histogram);
  if (it == tracks_.end()) {
    return std::nullopt;
  }
  const Track& track = *it->second;
  track.model->Expect(static_cast<std::int64_t>(track.last_run) + 1, expected_);
  v1::TemplateView view;
  view.set_histogram(track.name);
  view.set_method(std::string(track.model->method()));
  view.mutable_mu()->Add(expected_.mu.begin(), expected_.mu.end());
  view.mutable_sigma()->Add(expected_.sigma_mu.begin(), expected_.sigma_mu.end());
  view.set_integral(expected_.integral);
  view.set_last_run(track.last_run);
  view.mutable_last_pulls()->Add(track.last_pulls.begin(), track.last_pulls.end());
  view.set_learned_runs(track.model->learned_runs());
  for (const v1::Axis& axis : track.axes) {
    *view.add_axes() = axis;
  }
  view.set_last_final_run(track.last_final_run);
  return view;
}

std::uint32_t Monitor::alarms_active() const {
  std::uint32_t n = 0;
  for (const auto& [name, track] : tracks_) {
    const v1::AlarmState state = track->alarm.state();
    n += state == v1::ALARM_STATE_UNACKNOWLEDGED || state == v1::ALARM_STATE_ACKNOWLEDGED;
  }
  return n;
}

void Monitor::SaveTo(v1::Snapshot& snapshot) const {
  for (const auto& [name, track] : tracks_) {
    const auto* ewma = dynamic_cast<const EwmaModel*>(track->model.get());
    if (ewma == nullptr) {
      // TODO(#transformer): persist other methods once they offer a serialisable state.
      spdlog::warn("snapshot skips histogram={} method={} (no persistable state)", name,
                   track->model->method());
      continue;
    }
    v1::HistogramState* hs = snapshot.add_histograms();
    hs->set_name(name);
    for (const v1::Axis& axis : track->axes) {
      *hs->add_axes() = axis;
    }
    hs->set_method(std::string(ewma->method()));
    const EwmaState& st = ewma->state();
    v1::EwmaTemplateState* es = hs->mutable_ewma();
    es->set_alpha(st.alpha);
    es->set_integral(st.integral);
    es->set_learned_runs(st.learned_runs);
    es->mutable_weight()->Add(st.weight.begin(), st.weight.end());
    es->mutable_sum_mu()->Add(st.sum_mu.begin(), st.sum_mu.end());
    es->mutable_sum_sigma()->Add(st.sum_sigma.begin(), st.sum_sigma.end());
    hs->set_last_final_run(track->last_final_run);
    hs->set_last_run(track->last_run);
    hs->mutable_last_pulls()->Add(track->last_pulls.begin(), track->last_pulls.end());
    *hs->mutable_alarm() = track->alarm;
  }
}

std::optional<std::string> Monitor::RestoreFrom(const v1::Snapshot& snapshot) {
  std::map<std::string, std::unique_ptr<Track>, std::less<>> tracks;
  for (const v1::HistogramState& hs : snapshot.histograms()) {
    const std::string where = "histogram '" + hs.name() + "': ";
    if (hs.name().empty() || tracks.contains(hs.name())) {
      return where + "empty or repeated name";
    }
    if (hs.method() != "ewma") {
      return where + "method '" + hs.method() + "' cannot be restored";
    }
    std::uint64_t bins = 1;
    for (const v1::Axis& axis : hs.axes()) {
      bins *= axis.bins();
    }
    const v1::EwmaTemplateState& es = hs.ewma();
    if (hs.axes().empty() || bins == 0 || static_cast<std::uint64_t>(es.weight_size()) != bins ||
        es.sum_mu_size() != es.weight_size() || es.sum_sigma_size() != es.weight_size()) {
      return where + "template sums do not match its axes";
    }
    if (!(es.alpha() >= 0.0 && es.alpha() <= 1.0)) {
      return where + "alpha out of [0, 1]";
    }
    EwmaState st;
    st.alpha = es.alpha();
    st.integral = es.integral();
    st.learned_runs = es.learned_runs();
    st.weight.assign(es.weight().begin(), es.weight().end());
    st.sum_mu.assign(es.sum_mu().begin(), es.sum_mu().end());
    st.sum_sigma.assign(es.sum_sigma().begin(), es.sum_sigma().end());

    auto track = std::make_unique<Track>();
    track->name = hs.name();
    track->axes.assign(hs.axes().begin(), hs.axes().end());
    track->model = std::make_unique<EwmaModel>(std::move(st));
    track->generation = 0;  // settings are resolved (and alpha applied) on the next message
    track->settings = &settings_.For(hs.name());
    track->last_final_run = hs.last_final_run();
    track->last_run = hs.last_run();
    track->last_pulls.assign(hs.last_pulls().begin(), hs.last_pulls().end());
    track->alarm = hs.alarm();
    if (track->alarm.state() == v1::ALARM_STATE_UNSPECIFIED) {
      track->alarm.set_state(v1::ALARM_STATE_NORMAL);
    }
    tracks.emplace(hs.name(), std::move(track));
  }
  tracks_ = std::move(tracks);
  return std::nullopt;
}

}  // namespace dinamo::daemon
