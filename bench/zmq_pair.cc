// zmq_pair: the bus without the daemon, and the daemon's output seen from a consoles' seat.
//
//   zmq_pair pub ENDPOINT [--seconds S] [--bins B] [--histograms H] [--rate R] [--send-hwm N]
//       binds a PUB socket with dinamo-sim's settings (no high-water mark, or with --send-hwm
//       one at which send waits for the subscriber, as dinamo-sim --send-hwm; linger 10 s) and
//       publishes 100-bin histograms as dinamo-sim does: the message is filled and serialised
//       for every send, topic and body frames.
//   zmq_pair sub ENDPOINT [--seconds S] [--idle-s I] [--verdicts | --latency]
//       connects a SUB socket with dinamod's input settings (receive HWM 100 000) and counts
//       what arrives until S seconds after the first message or I seconds without one. With
//       --verdicts it subscribes to dinamod's output, parses every verdict and reports the
//       gaps in the output and input sequence numbers and the latency from publication
//       (histogram_time_unix_ns) to reception, on the one clock of this machine. With
//       --latency it parses the histograms themselves and reports the latency from their
//       time_unix_ns: the bare bus's share of the daemon's publication -> verdict latency.
//
// Both print one JSON line on stdout at the end (SIGINT or SIGTERM end them early, cleanly).

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dinamo/v1/histogram.pb.h"
#include "dinamo/v1/verdict.pb.h"
#include <zmq.hpp>

namespace {

using Clock = std::chrono::steady_clock;

volatile std::sig_atomic_t g_stop = 0;

void OnSignal(int) { g_stop = 1; }

struct Options {
  std::string mode;
  std::string endpoint;
  double seconds = 20.0;
  double idle_s = 2.0;
  double rate = 0.0;
  double wait_s = 1.0;
  std::size_t bins = 100;
  std::size_t histograms = 1000;
  bool verdicts = false;
  bool latency = false;
  int send_hwm = 0;
};

std::int64_t NowUnixNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int Usage() {
  std::fprintf(stderr,
               "usage: zmq_pair pub|sub ENDPOINT [--seconds S] [--idle-s I] [--rate R] "
               "[--bins B] [--histograms H] [--wait-s W] [--send-hwm N] [--verdicts | --latency]\n");
  return 2;
}

bool ParseOptions(int argc, char** argv, Options& o) {
  if (argc < 3) {
    return false;
  }
  o.mode = argv[1];
  o.endpoint = argv[2];
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--verdicts") {
      o.verdicts = true;
    } else if (a == "--latency") {
      o.latency = true;
    } else if (a == "--seconds" && has_value) {
      o.seconds = std::atof(argv[++i]);
    } else if (a == "--idle-s" && has_value) {
      o.idle_s = std::atof(argv[++i]);
    } else if (a == "--rate" && has_value) {
      o.rate = std::atof(argv[++i]);
    } else if (a == "--send-hwm" && has_value) {
      o.send_hwm = std::atoi(argv[++i]);
    } else if (a == "--wait-s" && has_value) {
      o.wait_s = std::atof(argv[++i]);
    } else if (a == "--bins" && has_value) {
      o.bins = static_cast<std::size_t>(std::atol(argv[++i]));
    } else if (a == "--histograms" && has_value) {
      o.histograms = static_cast<std::size_t>(std::atol(argv[++i]));
    } else {
      return false;
    }
  }
  return (o.mode == "pub" || o.mode == "sub") && o.bins > 0 && o.histograms > 0;
}

// ---------------------------------------------------------------------------------------------
// Publisher: what dinamo-sim's Publisher::Send does per message, on a pool of drawn counts.

int Publish(const Options& o) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::pub);
  socket.set(zmq::sockopt::sndhwm, o.send_hwm);
  if (o.send_hwm > 0) {
    socket.set(zmq::sockopt::xpub_nodrop, true);
  }
  socket.set(zmq::sockopt::linger, 10000);
  socket.bind(o.endpoint);

  std::vector<std::string> names;
  for (std::size_t i = 0; i < o.histograms; ++i) {
    names.push_back("PAIR/Histogram_" + std::to_string(i));
  }
  constexpr std::size_t kPool = 16;
  std::mt19937_64 rng(1);
  std::poisson_distribution<int> draw(200.0);
  std::vector<std::vector<double>> pool(kPool, std::vector<double>(o.bins));
  for (auto& counts : pool) {
    for (double& c : counts) {
      c = draw(rng);
    }
  }
  dinamo::v1::Histogram message;
  message.set_source("zmq_pair");
  std::string body;
  std::this_thread::sleep_for(std::chrono::duration<double>(o.wait_s));

  std::uint64_t sent = 0;
  std::uint64_t bytes = 0;
  const auto start = Clock::now();
  const auto end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  try {
    while (!g_stop) {
      if ((sent & 255) == 0 && Clock::now() >= end) {
        break;
      }
      if (o.rate > 0.0) {
        std::this_thread::sleep_until(start + std::chrono::duration_cast<Clock::duration>(
                                                  std::chrono::duration<double>(sent / o.rate)));
      }
      const std::string& name = names[sent % names.size()];
      const auto& counts = pool[(sent / names.size()) % kPool];
      message.set_name(name);
      message.set_run(1 + sent / names.size());
      message.set_final(true);
      message.mutable_counts()->Assign(counts.begin(), counts.end());
      message.clear_axes();
      auto* axis = message.add_axes();
      axis->set_bins(static_cast<std::uint32_t>(o.bins));
      axis->set_low(-5.0);
      axis->set_high(5.0);
      message.set_sequence(++sent);
      message.set_time_unix_ns(NowUnixNs());
      message.SerializeToString(&body);
      socket.send(zmq::buffer(name), zmq::send_flags::sndmore);
      socket.send(zmq::buffer(body), zmq::send_flags::none);
      bytes += body.size();
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) {
      throw;
    }
  }
  const double elapsed = Seconds(Clock::now() - start);
  std::printf("{\"sent\": %llu, \"seconds\": %.3f, \"rate\": %.1f, \"body_bytes\": %.1f}\n",
              static_cast<unsigned long long>(sent), elapsed, sent / elapsed,
              sent > 0 ? static_cast<double>(bytes) / static_cast<double>(sent) : 0.0);
  std::fflush(stdout);
  return 0;
}

// ---------------------------------------------------------------------------------------------
// Subscriber

struct Tally {
  std::uint64_t received = 0;
  std::uint64_t verdicts = 0;
  std::uint64_t other = 0;  // alarms, heartbeats, summaries: they share the output sequence
  std::uint64_t unparsed = 0;
  std::uint64_t output_gaps = 0;  // output sequence numbers never seen
  std::uint64_t input_gaps = 0;   // input sequence numbers never seen in a verdict
  std::uint64_t first_output = 0;
  std::uint64_t last_output = 0;
  std::uint64_t last_input = 0;
  std::vector<double> latency_us;
};

// A gap is counted where a number jumps ahead; a number going back (a restart) starts afresh.
void Follow(std::uint64_t seq, std::uint64_t& last, std::uint64_t& gaps) {
  if (last != 0 && seq > last + 1) {
    gaps += seq - last - 1;
  }
  last = seq;
}

void Account(const zmq::message_t& topic, const zmq::message_t& body, Tally& t) {
  const std::string_view name(static_cast<const char*>(topic.data()), topic.size());
  const auto* data = body.data();
  const int size = static_cast<int>(body.size());
  std::uint64_t seq = 0;
  if (name.starts_with("verdict/")) {
    static dinamo::v1::Verdict v;
    if (!v.ParseFromArray(data, size)) {
      ++t.unparsed;
      return;
    }
    ++t.verdicts;
    seq = v.sequence();
    t.latency_us.push_back(static_cast<double>(NowUnixNs() - v.histogram_time_unix_ns()) / 1e3);
    Follow(v.histogram_sequence(), t.last_input, t.input_gaps);
  } else if (name.starts_with("alarm/")) {
    static dinamo::v1::Alarm a;
    if (!a.ParseFromArray(data, size)) {
      ++t.unparsed;
      return;
    }
    ++t.other;
    seq = a.sequence();
  } else if (name == "heartbeat") {
    static dinamo::v1::Heartbeat h;
    if (!h.ParseFromArray(data, size)) {
      ++t.unparsed;
      return;
    }
    ++t.other;
    seq = h.sequence();
  } else {
    ++t.other;  // a message type this tool does not know: its sequence is not followed
    return;
  }
  if (t.first_output == 0) {
    t.first_output = seq;
  }
  Follow(seq, t.last_output, t.output_gaps);
}

double Percentile(std::vector<double>& v, double q) {
  if (v.empty()) {
    return 0.0;
  }
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

int Subscribe(const Options& o) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::sub);
  socket.set(zmq::sockopt::rcvhwm, 100000);
  socket.set(zmq::sockopt::subscribe, "");
  socket.connect(o.endpoint);

  Tally t;
  std::vector<zmq::message_t> frames(2);
  Clock::time_point first{};
  Clock::time_point last = Clock::now();
  const auto idle =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.idle_s));
  const auto window =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  // Before the first message the idle limit does not apply: the publisher may still start.
  while (!g_stop) {
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(50));
    const auto now = Clock::now();
    if (!(item.revents & ZMQ_POLLIN)) {
      const std::uint64_t seen = o.verdicts ? t.verdicts : t.received;
      if (seen > 0 && now - last > idle) {
        break;
      }
      continue;
    }
    while (socket.recv(frames[0], zmq::recv_flags::dontwait)) {
      if (!frames[0].more() || !socket.recv(frames[1], zmq::recv_flags::none)) {
        ++t.unparsed;
        continue;
      }
      if (t.received++ == 0) {
        first = Clock::now();
      }
      // With --verdicts only a verdict counts as activity: heartbeats go on forever.
      const std::uint64_t verdicts = t.verdicts;
      if (o.verdicts) {
        Account(frames[0], frames[1], t);
      } else if (o.latency) {
        dinamo::v1::Histogram h;
        if (h.ParseFromArray(frames[1].data(), static_cast<int>(frames[1].size()))) {
          t.latency_us.push_back(static_cast<double>(NowUnixNs() - h.time_unix_ns()) / 1e3);
        }
      }
      if (!o.verdicts || t.verdicts != verdicts) {
        last = Clock::now();
      }
    }
    if (t.received > 0 && last - first > window) {
      break;
    }
  }
  const double span = t.received > 1 ? Seconds(last - first) : 0.0;
  std::printf("{\"received\": %llu, \"seconds\": %.3f, \"rate\": %.1f",
              static_cast<unsigned long long>(t.received), span,
              span > 0 ? static_cast<double>(t.received) / span : 0.0);
  if (o.latency) {
    std::printf(", \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f",
                Percentile(t.latency_us, 0.5), Percentile(t.latency_us, 0.99),
                Percentile(t.latency_us, 0.999));
  }
  if (o.verdicts) {
    const double p50 = Percentile(t.latency_us, 0.5);
    const double p99 = Percentile(t.latency_us, 0.99);
    const double p999 = Percentile(t.latency_us, 0.999);
    const double max =
        t.latency_us.empty() ? 0.0 : *std::max_element(t.latency_us.begin(), t.latency_us.end());
    std::printf(
        ", \"verdicts\": %llu, \"other\": %llu, \"unparsed\": %llu, \"output_gaps\": %llu, "
        "\"input_gaps\": %llu, \"first_output\": %llu, \"last_output\": %llu, "
        "\"last_input\": %llu, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
        "\"max_us\": %.1f",
        static_cast<unsigned long long>(t.verdicts), static_cast<unsigned long long>(t.other),
        static_cast<unsigned long long>(t.unparsed), static_cast<unsigned long long>(t.output_gaps),
        static_cast<unsigned long long>(t.input_gaps),
        static_cast<unsigned long long>(t.first_output),
        static_cast<unsigned long long>(t.last_output),
        static_cast<unsigned long long>(t.last_input), p50, p99, p999, max);
  }
  std::printf("}\n");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseOptions(argc, argv, o)) {
    return Usage();
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  return o.mode == "pub" ? Publish(o) : Subscribe(o);
}
