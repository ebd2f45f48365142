#include "monitor.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include <spdlog/spdlog.h>

#include "dinamo/score.h"
#include <fnmatch.h>

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

std::map<std::string, ModelPersistence>& Persistences() {
  static std::map<std::string, ModelPersistence> persistences;
  return persistences;
}

const ModelPersistence* FindPersistence(std::string_view method) {
  const auto it = Persistences().find(std::string(method));
  return it == Persistences().end() ? nullptr : &it->second;
}

std::unique_ptr<JournalledTemplate> MakeTemplate(std::size_t bins, const HistogramSettings& s) {
  return std::make_unique<JournalledTemplate>(MakeModel(bins, s), s.journal_runs);
}

Label LabelOf(v1::Label label) {
  switch (label) {
    case v1::LABEL_GOOD:
      return Label::kGood;
    case v1::LABEL_BAD:
      return Label::kBad;
    default:
      return Label::kUnknown;
  }
}

v1::Label ProtoLabel(Label label) {
  return label == Label::kGood  ? v1::LABEL_GOOD
         : label == Label::kBad ? v1::LABEL_BAD
                                : v1::LABEL_UNSPECIFIED;
}

const char* LabelName(Label label) {
  return label == Label::kGood ? "good" : label == Label::kBad ? "bad" : "unknown";
}

LearningPolicy PolicyOf(const HistogramSettings& s) {
  LearningPolicy p;
  p.auto_accept = s.auto_accept;
  p.threshold = s.threshold;
  p.warmup_runs = s.warmup_runs;
  p.min_entries = s.min_entries;
  return p;
}

// The library's enumerations are the proto's shifted by one (proto 0 is UNSPECIFIED); events
// share their numbers.
v1::AlarmState ProtoState(AlarmState s) {
  return static_cast<v1::AlarmState>(static_cast<int>(s) + 1);
}
v1::Severity ProtoSeverity(Severity s) {
  return static_cast<v1::Severity>(static_cast<int>(s) + 1);
}
v1::AlarmEvent ProtoEvent(AlarmEvent e) { return static_cast<v1::AlarmEvent>(static_cast<int>(e)); }

Severity LibSeverity(v1::Severity s) {
  return s == v1::SEVERITY_UNSPECIFIED ? Severity::kNone
                                       : static_cast<Severity>(static_cast<int>(s) - 1);
}

// A new alpha (a reload) applies to the current template and to the journal's base, so that a
// replay after a late label goes on with it.
void SetAlpha(std::unique_ptr<JournalledTemplate>& t, double alpha) {
  const auto* current = dynamic_cast<const EwmaModel*>(&t->model());
  if (current == nullptr || current->state().alpha == alpha) {
    return;
  }
  auto with_alpha = [alpha](const TemplateModel& m) {
    std::unique_ptr<TemplateModel> copy = m.Clone();
    if (auto* ewma = dynamic_cast<EwmaModel*>(copy.get())) {
      ewma->mutable_state().alpha = alpha;
    }
    return copy;
  };
  std::unique_ptr<TemplateModel> base = t->base() ? with_alpha(*t->base()) : nullptr;
  t = std::make_unique<JournalledTemplate>(std::move(base), with_alpha(t->model()), t->journal(),
                                           t->journal_runs());
}

void SaveEwma(const EwmaState& st, v1::EwmaTemplateState& es) {
  es.set_alpha(st.alpha);
  es.set_integral(st.integral);
  es.set_learned_runs(st.learned_runs);
  es.mutable_weight()->Add(st.weight.begin(), st.weight.end());
  es.mutable_sum_mu()->Add(st.sum_mu.begin(), st.sum_mu.end());
  es.mutable_sum_sigma()->Add(st.sum_sigma.begin(), st.sum_sigma.end());
}

// The sums of a snapshot, or why they cannot be used for a template of `bins` bins.
std::optional<std::string> LoadEwma(const v1::EwmaTemplateState& es, std::uint64_t bins,
                                    EwmaState& st) {
  if (bins == 0 || static_cast<std::uint64_t>(es.weight_size()) != bins ||
      es.sum_mu_size() != es.weight_size() || es.sum_sigma_size() != es.weight_size()) {
    return "template sums do not match its axes";
  }
  if (!(es.alpha() >= 0.0 && es.alpha() <= 1.0)) {
    return "alpha out of [0, 1]";
  }
  st.alpha = es.alpha();
  st.integral = es.integral();
  st.learned_runs = es.learned_runs();
  st.weight.assign(es.weight().begin(), es.weight().end());
  st.sum_mu.assign(es.sum_mu().begin(), es.sum_mu().end());
  st.sum_sigma.assign(es.sum_sigma().begin(), es.sum_sigma().end());
  return std::nullopt;
}

void SaveAlarm(const AlarmRecord& a, v1::AlarmRecord& out) {
  out.set_state(ProtoState(a.state));
  out.set_severity(ProtoSeverity(a.severity));
  out.set_run(a.run);
  out.set_raised_unix_ns(a.raised_unix_ns);
  out.set_consecutive_anomalous(a.consecutive_anomalous);
  out.set_shelved_until_unix_s(a.shelved_until_unix_s);
  out.set_consecutive_normal(a.consecutive_normal);
  out.set_active(a.active);
}

std::optional<std::string> LoadAlarm(const v1::AlarmRecord& in, AlarmRecord& a) {
  const int state = static_cast<int>(in.state());
  const int severity = static_cast<int>(in.severity());
  if (state < 0 || state > static_cast<int>(AlarmState::kDisabled) + 1 || severity < 0 ||
      severity > static_cast<int>(Severity::kInvalid) + 1) {
    return "alarm state or severity out of range";
  }
  a.state = in.state() == v1::ALARM_STATE_UNSPECIFIED ? AlarmState::kNormal
                                                      : static_cast<AlarmState>(state - 1);
  a.severity = LibSeverity(in.severity());
  a.run = in.run();
  a.raised_unix_ns = in.raised_unix_ns();
  a.consecutive_anomalous = in.consecutive_anomalous();
  a.shelved_until_unix_s = in.shelved_until_unix_s();
  a.consecutive_normal = in.consecutive_normal();
  // Snapshots from before the lifecycle kept no condition: an active alarm had it holding.
  a.active =
      in.active() || a.state == AlarmState::kUnacknowledged || a.state == AlarmState::kAcknowledged;
  return std::nullopt;
}

}  // namespace

struct Monitor::Track {
  std::string name;
  std::vector<v1::Axis> axes;
  std::unique_ptr<JournalledTemplate> tmpl;  // the model and the journal of its final runs
  std::uint64_t generation = 0;              // of the settings applied to the model
  const HistogramSettings* settings = nullptr;
  std::uint64_t last_final_run = 0;
  std::uint64_t last_run = 0;
  std::vector<double> last_pulls;
  AlarmRecord alarm;
  // The last change of the alarm, the verdict behind it and who made it (shifter actions).
  AlarmEvent alarm_event = AlarmEvent::kNone;
  std::optional<v1::Verdict> alarm_verdict;
  Actor actor;
};

std::span<const std::string_view> RejectionReasons() { return kReasons; }

void RegisterModelPersistence(const std::string& method, ModelPersistence persistence) {
  Persistences()[method] = std::move(persistence);
}

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
    track->tmpl = MakeTemplate(h.counts_size(), *track->settings);
    spdlog::debug("template created histogram={} bins={} method={} journal_runs={}", h.name(),
                  h.counts_size(), track->tmpl->model().method(), track->settings->journal_runs);
    return *tracks_.emplace(h.name(), std::move(track)).first->second;
  }

  Track& track = *it->second;
  ApplySettings(track);
  if (!SameBinning(track.axes, shape)) {
    spdlog::info("template reset histogram={} reason=binning_changed bins={}->{}", h.name(),
                 track.tmpl->model().bins(), h.counts_size());
    track.axes = std::move(shape);
    track.tmpl = MakeTemplate(h.counts_size(), *track.settings);
    track.last_pulls.clear();
    dinamo::Rebaseline(track.alarm);
    track.alarm.run = h.run();
    track.alarm_event = AlarmEvent::kRebaselined;
    track.alarm_verdict.reset();
    track.actor = Actor{"", "", "binning changed: template reset"};
    result.reset_alarm = AlarmMessage(track, now_unix_ns);
    result.reset_alarm->set_severity(v1::SEVERITY_UNDEFINED);  // a fresh template cannot tell
  }
  return track;
}

void Monitor::ApplySettings(Track& track) {
  if (track.generation == generation_) {
    return;
  }
  track.settings = &settings_.For(track.name);
  track.generation = generation_;
  if (track.settings->method != track.tmpl->model().method()) {
    spdlog::warn(
        "method change ignored histogram={} method={} configured={} "
        "(takes effect when the template is reset)",
        track.name, track.tmpl->model().method(), track.settings->method);
  }
  SetAlpha(track.tmpl, track.settings->alpha);
  const std::size_t journal_runs = track.settings->journal_runs;
  if (track.tmpl->journal_runs() != journal_runs) {
    track.tmpl->set_journal_runs(journal_runs);
  }
}

void Monitor::FillPulls(v1::Verdict& verdict, const Expectation& expected) const {
  // The n largest |pull| (NaN last, the lower bin first among equals) in one pass over the bins,
  // kept in order by insertion: no index vector, no sort, no allocation per message.
  const std::size_t bins = pulls_.size();
  const std::size_t n = std::min(kVerdictPulls, bins);
  if (n == 0) {
    return;
  }
  std::array<std::uint32_t, kVerdictPulls> top{};
  std::array<double, kVerdictPulls> magnitude{};
  std::size_t kept = 0;
  for (std::uint32_t b = 0; b < bins; ++b) {
    const double p = std::abs(pulls_[b]);
    const double m = std::isnan(p) ? -1.0 : p;
    if (kept == n && !(m > magnitude[n - 1])) {
      continue;
    }
    std::size_t i = kept < n ? kept++ : n - 1;
    for (; i > 0 && m > magnitude[i - 1]; --i) {
      top[i] = top[i - 1];
      magnitude[i] = magnitude[i - 1];
    }
    top[i] = b;
    magnitude[i] = m;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t b = top[i];
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
  const HistogramSettings& s = *track.settings;
  const AlarmSettings delays{s.on_delay, s.off_delay};
  const AlarmEvent event =
      OnVerdict(track.alarm, LibSeverity(verdict.severity()), verdict.run(), now_unix_ns, delays);
  if (event == AlarmEvent::kNone) {
    return std::nullopt;
  }
  track.alarm_event = event;
  track.alarm_verdict = verdict;
  track.actor = Actor{};
  spdlog::info("alarm {} histogram={} run={} state={} severity={} s={:.3f} threshold={}",
               AlarmEventName(event), track.name, verdict.run(), AlarmStateName(track.alarm.state),
               SeverityName(track.alarm.severity), verdict.log_reduced_chi2(), verdict.threshold());
  return AlarmMessage(track, now_unix_ns);
}

v1::Alarm Monitor::AlarmMessage(const Track& track, std::int64_t now_unix_ns) const {
  const AlarmRecord& a = track.alarm;
  v1::Alarm alarm;
  alarm.set_histogram(track.name);
  alarm.set_run(a.run);
  alarm.set_state(ProtoState(a.state));
  alarm.set_severity(ProtoSeverity(a.severity));
  if (track.alarm_verdict) {
    *alarm.mutable_verdict() = *track.alarm_verdict;
  }
  alarm.set_event(ProtoEvent(track.alarm_event));
  alarm.set_time_unix_ns(now_unix_ns);
  alarm.set_raised_unix_ns(a.raised_unix_ns);
  alarm.set_user(track.actor.user);
  alarm.set_host(track.actor.host);
  alarm.set_comment(track.actor.comment);
  alarm.set_shelved_until_unix_s(a.shelved_until_unix_s);
  alarm.set_consecutive_anomalous(a.consecutive_anomalous);
  return alarm;
}

MonitorResult Monitor::OnHistogram(std::string_view topic, const v1::Histogram& h,
                                   std::int64_t now_unix_ns) {
  MonitorResult result;
  if (auto rejection = Check(topic, h)) {
    // A known histogram whose final is refused counts as INVALID in its run's summary; its
    // template and alarm do not change (bad input never changes state).
    if (h.final() && h.run() > 0 && tracks_.contains(h.name()) &&
        rejection->reason.rfind("run_", 0) != 0 && rejection->reason != "topic_mismatch") {
      result.summary = Tally(h.name(), h.run(), 0.0, v1::SEVERITY_INVALID, now_unix_ns);
    }
    result.rejection = std::move(rejection);
    return result;
  }

  Track& track = TrackFor(h, now_unix_ns, result);
  const HistogramSettings& s = *track.settings;
  JournalledTemplate& tmpl = *track.tmpl;
  const auto run = static_cast<std::int64_t>(h.run());
  if (dinamo::ExpireShelving(track.alarm, now_unix_ns) == AlarmEvent::kUnshelved) {
    track.alarm_event = AlarmEvent::kUnshelved;
    track.actor = Actor{"", "", "shelving expired"};
    spdlog::info("alarm UNSHELVED histogram={} reason=expired", track.name);
    result.unshelved_alarm = AlarmMessage(track, now_unix_ns);
  }

  Normalise(CountsOf(h), obs_);
  pulls_.resize(obs_.bins());
  tmpl.model().Expect(run, expected_);  // the template before it learns from this run
  const bool warmup = tmpl.model().learned_runs() < s.warmup_runs;
  const std::string method(tmpl.model().method());

  // Only a final run is journalled and may teach; a partial one is scored and nothing else.
  Score score;
  bool learned = false;
  if (h.final()) {
    const auto outcome =
        tmpl.ScoreFinal(run, CountsOf(h), obs_, LabelOf(h.label()), PolicyOf(s), pulls_);
    score = outcome.score;
    learned = outcome.learned;
    if (learned && learned_hook_) {
      learned_hook_(track.name, tmpl.mutable_model());
    }
  } else {
    score = tmpl.model().ScoreRun(run, obs_, pulls_);
  }

  const bool judgeable = !obs_.empty() && obs_.integral >= s.min_entries;
  const bool anomalous = score.Anomalous(s.threshold);
  const double warning = s.warning_threshold.value_or(s.threshold);

  v1::Verdict& v = result.verdict.emplace();
  v.set_histogram(h.name());
  v.set_run(h.run());
  v.set_chi2(score.chi2);
  v.set_log_reduced_chi2(score.log_reduced_chi2);
  v.set_threshold(s.threshold);
  v.set_anomalous(anomalous);
  v.set_warmup(warmup);
  v.set_method(method);
  FillPulls(v, expected_);
  v.set_time_unix_ns(now_unix_ns);
  v.set_histogram_time_unix_ns(h.time_unix_ns());
  v.set_final(h.final());
  // "Cannot tell" (warm-up, too few entries) is never reported as good or bad.
  v.set_severity(warmup || !judgeable
                     ? v1::SEVERITY_UNDEFINED
                     : ProtoSeverity(SeverityOf(score.log_reduced_chi2, s.threshold, warning)));
  v.set_histogram_sequence(h.sequence());
  v.set_integral(obs_.integral);
  v.set_bins(static_cast<std::uint32_t>(obs_.bins()));
  if (s.warning_threshold) {
    v.set_warning_threshold(*s.warning_threshold);
  }
  v.set_learned(learned);

  track.last_run = h.run();
  track.last_pulls = pulls_;
  if (h.final()) {
    track.last_final_run = h.run();
  }
  result.alarm = UpdateAlarm(track, v, now_unix_ns);
  if (h.final()) {
    result.summary = Tally(h.name(), h.run(), score.log_reduced_chi2, v.severity(), now_unix_ns);
  }
  return result;
}

void Monitor::ConfigChanged() { ++generation_; }

std::optional<v1::TemplateView> Monitor::Template(const std::string& histogram) const {
  const auto it = tracks_.find(histogram);
  if (it == tracks_.end()) {
    return std::nullopt;
  }
  const Track& track = *it->second;
  const TemplateModel& model = track.tmpl->model();
  model.Expect(static_cast<std::int64_t>(track.last_run) + 1, expected_);
  v1::TemplateView view;
  view.set_histogram(track.name);
  view.set_method(std::string(model.method()));
  view.mutable_mu()->Add(expected_.mu.begin(), expected_.mu.end());
  view.mutable_sigma()->Add(expected_.sigma_mu.begin(), expected_.sigma_mu.end());
  view.set_integral(expected_.integral);
  view.set_last_run(track.last_run);
  view.mutable_last_pulls()->Add(track.last_pulls.begin(), track.last_pulls.end());
  view.set_learned_runs(model.learned_runs());
  for (const v1::Axis& axis : track.axes) {
    *view.add_axes() = axis;
  }
  view.set_last_final_run(track.last_final_run);
  return view;
}

std::uint32_t Monitor::alarms_active() const {
  std::uint32_t n = 0;
  for (const auto& [name, track] : tracks_) {
    n += IsActive(track->alarm);
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Labels

CommandOutcome Monitor::SetLabel(const v1::SetLabel& request, const Actor& who) {
  CommandOutcome out;
  const Label label = LabelOf(request.label());
  const auto run = static_cast<std::int64_t>(request.run());
  if (label == Label::kUnknown) {
    out.refused = "label must be LABEL_GOOD or LABEL_BAD";
    return out;
  }
  if (request.run() == 0) {
    out.refused = "run 0 (unset)";
    return out;
  }

  // One histogram, or every histogram that still has the run in its journal.
  std::vector<Track*> targets;
  if (request.whole_run()) {
    for (auto& [name, track] : tracks_) {
      const auto& journal = track->tmpl->journal();
      if (std::any_of(journal.begin(), journal.end(),
                      [run](const JournalEntry& e) { return e.run == run; })) {
        targets.push_back(track.get());
      }
    }
    if (targets.empty()) {
      out.refused = "no histogram has run " + std::to_string(run) + " in its journal";
      return out;
    }
  } else {
    const auto it = tracks_.find(request.histogram());
    if (it == tracks_.end()) {
      out.refused = "unknown histogram '" + request.histogram() + "'";
      return out;
    }
    targets.push_back(it->second.get());
  }

  std::uint32_t changed = 0;
  for (Track* track : targets) {
    ApplySettings(*track);
    JournalledTemplate& tmpl = *track->tmpl;
    const auto& journal = tmpl.journal();
    const auto entry = std::find_if(journal.begin(), journal.end(),
                                    [run](const JournalEntry& e) { return e.run == run; });
    const Label before = entry == journal.end() ? Label::kUnknown : entry->label;
    const bool learned_before = entry != journal.end() && entry->learned;
    if (auto why = tmpl.SetLabel(run, label, PolicyOf(*track->settings))) {
      out.refused = "histogram '" + track->name + "': " + *why;
      return out;  // only the single-histogram form can get here: the journal holds the run
    }
    // The template learns differently now: a transformer queues its one training for it.
    if (learned_hook_ && entry != journal.end() && entry->learned != learned_before) {
      learned_hook_(track->name, tmpl.mutable_model());
    }
    ++out.affected;
    changed += before != label;
    if (before != Label::kUnknown && before != label) {
      spdlog::info(
          "label replaced histogram={} run={} old={} new={} user={} host={} comment=\"{}\"",
          track->name, run, LabelName(before), LabelName(label), who.user, who.host, who.comment);
    }
  }
  spdlog::info(
      "label applied histogram={} run={} label={} histograms={} changed={} user={} "
      "host={} comment=\"{}\"",
      request.whole_run() ? "*" : request.histogram(), run, LabelName(label), out.affected, changed,
      who.user, who.host, who.comment);
  out.detail = changed == 0 ? "no change (the label was already known)" : "";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Alarm actions

CommandOutcome Monitor::ApplyAlarmAction(const std::string& histogram, std::string_view what,
                                         AlarmAction action, std::int64_t until_unix_s,
                                         const Actor& who, std::int64_t now_unix_ns) {
  CommandOutcome out;
  const auto it = tracks_.find(histogram);
  if (it == tracks_.end()) {
    out.refused = "unknown histogram '" + histogram + "'";
    return out;
  }
  Track& track = *it->second;
  const ActionResult r = action(track.alarm, until_unix_s, now_unix_ns);
  if (r.refused) {
    out.refused = "histogram '" + histogram + "': " + *r.refused;
    return out;
  }
  if (r.event == AlarmEvent::kNone) {
    out.detail = "no change (already " + std::string(AlarmStateName(track.alarm.state)) + ")";
    return out;  // idempotent: nothing to publish
  }
  out.affected = 1;
  track.alarm_event = r.event;
  track.actor = who;
  spdlog::info("alarm {} histogram={} state={} user={} host={} comment=\"{}\"", what, histogram,
               AlarmStateName(track.alarm.state), who.user, who.host, who.comment);
  out.alarms.push_back(AlarmMessage(track, now_unix_ns));
  return out;
}

CommandOutcome Monitor::Acknowledge(const std::string& histogram, const Actor& who,
                                    std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "ACKNOWLEDGED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Acknowledge(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Shelve(const std::string& histogram, std::int64_t until_unix_s,
                               const Actor& who, std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "SHELVED",
      [](AlarmRecord& a, std::int64_t until, std::int64_t now) {
        return dinamo::Shelve(a, until, now);
      },
      until_unix_s, who, now_unix_ns);
}

CommandOutcome Monitor::Unshelve(const std::string& histogram, const Actor& who,
                                 std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "UNSHELVED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Unshelve(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Disable(const std::string& histogram, const Actor& who,
                                std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "DISABLED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Disable(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Enable(const std::string& histogram, const Actor& who,
                               std::int64_t now_unix_ns) {
  return ApplyAlarmAction(
      histogram, "ENABLED",
      [](AlarmRecord& a, std::int64_t, std::int64_t) { return dinamo::Enable(a); }, 0, who,
      now_unix_ns);
}

CommandOutcome Monitor::Rebaseline(const std::string& pattern, const Actor& who,
                                   std::int64_t now_unix_ns) {
  CommandOutcome out;
  if (pattern.empty()) {
    out.refused = "pattern must not be empty (a glob on histogram names; '*' for all)";
    return out;
  }
  for (auto& [name, track] : tracks_) {
    if (fnmatch(pattern.c_str(), name.c_str(), 0) != 0) {
      continue;
    }
    ApplySettings(*track);
    track->tmpl = MakeTemplate(track->tmpl->model().bins(), *track->settings);
    track->last_pulls.clear();
    dinamo::Rebaseline(track->alarm);
    track->alarm_event = AlarmEvent::kRebaselined;
    track->alarm_verdict.reset();
    track->actor = who;
    out.alarms.push_back(AlarmMessage(*track, now_unix_ns));
    ++out.affected;
  }
  if (out.affected == 0) {
    out.refused = "no histogram matches '" + pattern + "'";
    return out;
  }
  spdlog::info(
      "template reset pattern=\"{}\" histograms={} reason=rebaseline user={} host={} "
      "comment=\"{}\"",
      pattern, out.affected, who.user, who.host, who.comment);
  return out;
}

v1::AlarmTable Monitor::Alarms(std::string_view prefix) const {
  v1::AlarmTable table;
  for (const auto& [name, track] : tracks_) {
    if (track->alarm.state != AlarmState::kNormal && name.starts_with(prefix)) {
      *table.add_alarms() = AlarmMessage(*track, 0);
    }
  }
  return table;
}

std::vector<v1::Alarm> Monitor::ExpireShelving(std::int64_t now_unix_ns) {
  std::vector<v1::Alarm> out;
  for (auto& [name, track] : tracks_) {
    if (dinamo::ExpireShelving(track->alarm, now_unix_ns) == AlarmEvent::kUnshelved) {
      track->alarm_event = AlarmEvent::kUnshelved;
      track->actor = Actor{"", "", "shelving expired"};
      spdlog::info("alarm UNSHELVED histogram={} reason=expired", name);
      out.push_back(AlarmMessage(*track, now_unix_ns));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Run summaries

std::optional<v1::RunSummary> Monitor::Tally(const std::string& name, std::uint64_t run, double s,
                                             v1::Severity severity, std::int64_t now_unix_ns) {
  if (run <= last_summarised_run_) {
    return std::nullopt;  // that run's summary is out already
  }
  RunTally& tally = tallies_[run];
  if (tally.histograms.empty()) {
    tally.first_final_unix_ns = now_unix_ns;
  }
  // A refused final does not override a scored one.
  if (tally.histograms.try_emplace(name, s, severity).second &&
      previous_run_histograms_.contains(name)) {
    ++tally.expected_seen;
  }
  if (previous_run_histograms_.empty() || tally.expected_seen < previous_run_histograms_.size()) {
    return std::nullopt;
  }
  return Summarise(run, tally, now_unix_ns);
}

std::vector<v1::RunSummary> Monitor::DueSummaries(std::int64_t now_unix_ns, double after_s) {
  std::vector<v1::RunSummary> out;
  const auto after_ns = static_cast<std::int64_t>(after_s * 1e9);
  while (!tallies_.empty()) {
    const auto& [run, tally] = *tallies_.begin();
    if (now_unix_ns - tally.first_final_unix_ns < after_ns) {
      break;
    }
    out.push_back(Summarise(run, tally, now_unix_ns));
  }
  return out;
}

v1::RunSummary Monitor::Summarise(std::uint64_t run, const RunTally& tally,
                                  std::int64_t now_unix_ns) {
  v1::RunSummary summary;
  summary.set_run(run);
  summary.set_histograms(static_cast<std::uint32_t>(tally.histograms.size()));
  summary.set_time_unix_ns(now_unix_ns);
  std::vector<std::pair<double, const std::string*>> scored;
  previous_run_histograms_.clear();
  for (const auto& [name, result] : tally.histograms) {
    const auto& [s, severity] = result;
    previous_run_histograms_.insert(name);
    switch (severity) {
      case v1::SEVERITY_MINOR:
        summary.set_minor(summary.minor() + 1);
        break;
      case v1::SEVERITY_MAJOR:
        summary.set_major(summary.major() + 1);
        break;
      case v1::SEVERITY_UNDEFINED:
        summary.set_undefined(summary.undefined() + 1);
        break;
      case v1::SEVERITY_INVALID:
        summary.set_invalid(summary.invalid() + 1);
        break;
      default:
        summary.set_none(summary.none() + 1);
        break;
    }
    // The worst are those judged: "cannot tell" and refused input are counted, not ranked.
    if (severity != v1::SEVERITY_UNDEFINED && severity != v1::SEVERITY_INVALID) {
      scored.emplace_back(s, &name);
    }
  }
  const std::size_t n = std::min(kSummaryWorst, scored.size());
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(n), scored.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && *a.second < *b.second);
                    });
  for (std::size_t i = 0; i < n; ++i) {
    const auto& [s, severity] = tally.histograms.find(*scored[i].second)->second;
    v1::RunSummary::Worst* w = summary.add_worst();
    w->set_histogram(*scored[i].second);
    w->set_log_reduced_chi2(s);
    w->set_severity(severity);
  }
  // Runs before this one that are still open are summarised by the timer; later finals of
  // this run or earlier ones no longer count.
  last_summarised_run_ = std::max(last_summarised_run_, run);
  tallies_.erase(tallies_.begin(), tallies_.upper_bound(run));
  for (auto& [later, pending] : tallies_) {
    pending.expected_seen = 0;
    for (const auto& [name, result] : pending.histograms) {
      pending.expected_seen += previous_run_histograms_.contains(name);
    }
  }
  return summary;
}

// ---------------------------------------------------------------------------------------------
// Snapshots

void Monitor::SaveTo(v1::Snapshot& snapshot) const {
  for (const auto& [name, track] : tracks_) {
    const JournalledTemplate& tmpl = *track->tmpl;
    const auto* ewma = dynamic_cast<const EwmaModel*>(&tmpl.model());
    const ModelPersistence* other = ewma ? nullptr : FindPersistence(tmpl.model().method());
    if (ewma == nullptr && other == nullptr) {
      spdlog::warn("snapshot skips histogram={} method={} (no persistable state)", name,
                   tmpl.model().method());
      continue;
    }
    v1::HistogramState* hs = snapshot.add_histograms();
    hs->set_name(name);
    for (const v1::Axis& axis : track->axes) {
      *hs->add_axes() = axis;
    }
    hs->set_method(std::string(tmpl.model().method()));
    if (ewma != nullptr) {
      SaveEwma(ewma->state(), *hs->mutable_ewma());
    } else {
      other->save(tmpl.model(), *hs);
    }
    hs->set_last_final_run(track->last_final_run);
    hs->set_last_run(track->last_run);
    hs->mutable_last_pulls()->Add(track->last_pulls.begin(), track->last_pulls.end());

    v1::AlarmRecord* alarm = hs->mutable_alarm();
    SaveAlarm(track->alarm, *alarm);
    alarm->set_event(ProtoEvent(track->alarm_event));
    if (track->alarm_verdict) {
      *alarm->mutable_verdict() = *track->alarm_verdict;
    }
    alarm->set_user(track->actor.user);
    alarm->set_host(track->actor.host);
    alarm->set_comment(track->actor.comment);

    if (const auto* base = dynamic_cast<const EwmaModel*>(tmpl.base())) {
      SaveEwma(base->state(), *hs->mutable_journal_base());
    }
    for (const JournalEntry& e : tmpl.journal()) {
      v1::JournalEntry* je = hs->add_journal();
      je->set_run(static_cast<std::uint64_t>(e.run));
      je->set_label(ProtoLabel(e.label));
      je->mutable_counts()->Add(e.counts.begin(), e.counts.end());
      je->set_learned(e.learned);
    }
  }
}

std::optional<std::string> Monitor::RestoreFrom(const v1::Snapshot& snapshot) {
  std::map<std::string, std::unique_ptr<Track>, std::less<>> tracks;
  for (const v1::HistogramState& hs : snapshot.histograms()) {
    const std::string where = "histogram '" + hs.name() + "': ";
    if (hs.name().empty() || tracks.contains(hs.name())) {
      return where + "empty or repeated name";
    }
    const ModelPersistence* other = hs.method() == "ewma" ? nullptr : FindPersistence(hs.method());
    if (hs.method() != "ewma" && other == nullptr) {
      return where + "method '" + hs.method() + "' cannot be restored";
    }
    std::uint64_t bins = 1;
    for (const v1::Axis& axis : hs.axes()) {
      bins *= axis.bins();
    }
    if (hs.axes().empty()) {
      bins = 0;
    }
    std::unique_ptr<TemplateModel> current;
    if (other != nullptr) {
      std::string error;
      current = other->load(hs, bins, error);
      if (!current) {
        return where + error;
      }
    } else {
      EwmaState st;
      if (auto why = LoadEwma(hs.ewma(), bins, st)) {
        return where + *why;
      }
      current = std::make_unique<EwmaModel>(std::move(st));
    }

    // The journal: its base state, then runs in increasing order up to the last final run.
    std::unique_ptr<TemplateModel> base;
    if (hs.has_journal_base()) {
      EwmaState st;
      if (auto why = LoadEwma(hs.journal_base(), bins, st)) {
        return where + "journal base: " + *why;
      }
      base = std::make_unique<EwmaModel>(std::move(st));
    } else if (hs.journal_size() > 0 && current->ReplaysJournal()) {
      return where + "journal without its base state";
    }
    std::deque<JournalEntry> journal;
    for (const v1::JournalEntry& je : hs.journal()) {
      const auto run = static_cast<std::int64_t>(je.run());
      if (je.run() == 0 || je.run() > hs.last_final_run() ||
          (!journal.empty() && run <= journal.back().run)) {
        return where + "journal runs out of order";
      }
      if (static_cast<std::uint64_t>(je.counts_size()) != bins) {
        return where + "journal run " + std::to_string(run) + " has the wrong number of counts";
      }
      journal.push_back({run, LabelOf(je.label()),
                         std::vector<double>(je.counts().begin(), je.counts().end()),
                         je.learned()});
    }

    auto track = std::make_unique<Track>();
    track->name = hs.name();
    track->axes.assign(hs.axes().begin(), hs.axes().end());
    track->generation = 0;  // settings are resolved (and alpha applied) on the next message
    track->settings = &settings_.For(hs.name());
    // A journal longer than journal_runs now is folded into its base, as it would have been.
    const std::size_t journal_runs = track->settings->journal_runs;
    track->tmpl = std::make_unique<JournalledTemplate>(std::move(base), std::move(current),
                                                       std::move(journal), journal_runs);
    track->last_final_run = hs.last_final_run();
    track->last_run = hs.last_run();
    track->last_pulls.assign(hs.last_pulls().begin(), hs.last_pulls().end());
    if (auto why = LoadAlarm(hs.alarm(), track->alarm)) {
      return where + *why;
    }
    track->alarm_event = static_cast<AlarmEvent>(std::clamp(
        static_cast<int>(hs.alarm().event()), 0, static_cast<int>(AlarmEvent::kRebaselined)));
    if (hs.alarm().has_verdict()) {
      track->alarm_verdict = hs.alarm().verdict();
    }
    track->actor = Actor{hs.alarm().user(), hs.alarm().host(), hs.alarm().comment()};
    tracks.emplace(hs.name(), std::move(track));
  }
  tracks_ = std::move(tracks);
  return std::nullopt;
}

}  // namespace dinamo::daemon
