#pragma once

// What the integration tests need to drive a real dinamod on loopback: free ports, the daemon
// as a child process (killed whatever happens), a readout PUB, a console SUB, a control REQ
// and a tiny HTTP GET.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "dinamo/v1/control.pb.h"
#include "dinamo/v1/histogram.pb.h"
#include "dinamo/v1/verdict.pb.h"
#include <gtest/gtest.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace dinamo::testing {

using namespace std::chrono_literals;

// A port nobody listens on right now: bind to port 0, read it back, close.
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw std::runtime_error("cannot bind a loopback socket");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

inline std::string Tcp(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// A dinamod child with its own directory, config and log, on free loopback ports.
class DaemonProcess {
 public:
  explicit DaemonProcess(const std::string& test_name)
      : dir_(std::filesystem::temp_directory_path() /
             ("dinamod_it_" + std::to_string(::getpid()) + "_" + test_name)),
        readout_(FreePort()),
        output_(FreePort()),
        control_(FreePort()),
        http_(FreePort()) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }

  ~DaemonProcess() {
    Kill();
    if (!::testing::Test::HasFailure()) {
      std::filesystem::remove_all(dir_);
    }
  }

  std::string ConfigText(double threshold, const std::string& extra_input = "") const {
    std::ostringstream c;
    c << "input:\n  connect: [\"" << Tcp(readout_) << "\"]\n"
      << extra_input << "output:\n  bind: \"" << Tcp(output_) << "\"\n  heartbeat_s: 0.2\n"
      << "control:\n  bind: \"" << Tcp(control_) << "\"\n"
      << "http:\n  bind: \"127.0.0.1:" << http_ << "\"\n"
      << "state:\n  directory: \"" << (dir_ / "state").string()
      << "\"\n  snapshot_interval_s: 3600\n"
      << "log:\n  level: info\n"
      << "defaults:\n  method: ewma\n  alpha: 0.5\n  threshold: " << threshold
      << "\n  warmup_runs: 0\n  auto_accept: never\n";
    return c.str();
  }

  void WriteConfig(const std::string& text) const {
    std::ofstream(config_path(), std::ios::trunc) << text;
  }
  void AppendConfig(const std::string& text) const {
    std::ofstream(config_path(), std::ios::app) << text;
  }

  void Start() {
    const std::string binary = std::string(DINAMO_BINARY_DIR) + "/daemon/dinamod";
    const std::string log = (dir_ / "dinamod.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      std::freopen(log.c_str(), "a", stdout);
      std::freopen(log.c_str(), "a", stderr);
      ::execl(binary.c_str(), binary.c_str(), "--config", config_path().c_str(),
              static_cast<char*>(nullptr));
      std::_Exit(127);
    }
  }

  bool Alive() {
    if (pid_ <= 0) {
      return false;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return false;
    }
    return true;
  }

  void Signal(int sig) const {
    if (pid_ > 0) {
      ::kill(pid_, sig);
    }
  }

  // Waits for the child to exit; its exit code, or nothing when it outlived `timeout`.
  std::optional<int> Wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!Alive()) {
        return exit_code_;
      }
      std::this_thread::sleep_for(10ms);
    }
    return std::nullopt;
  }

  // SIGTERM and the exit code (nothing when it had to be killed).
  std::optional<int> Stop() {
    if (!Alive()) {
      return exit_code_;
    }
    Signal(SIGTERM);
    auto code = Wait(10s);
    if (!code) {
      Kill();
    }
    return code;
  }

  void Kill() {
    if (Alive()) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  std::string Log() const {
    std::ifstream in(dir_ / "dinamod.log");
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
  }

  std::string config_path() const { return (dir_ / "dinamod.yaml").string(); }
  std::filesystem::path state_dir() const { return dir_ / "state"; }
  int readout() const { return readout_; }
  void set_readout(int port) { readout_ = port; }
  int output() const { return output_; }
  int control() const { return control_; }
  int http() const { return http_; }

 private:
  std::filesystem::path dir_;
  int readout_, output_, control_, http_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
};

// The readout (PUB, bound) and a console (SUB on the daemon's output).
class Bus {
 public:
  explicit Bus(const DaemonProcess& d)
      : pub_(ctx_, zmq::socket_type::pub), sub_(ctx_, zmq::socket_type::sub) {
    pub_.set(zmq::sockopt::sndhwm, 0);
    pub_.set(zmq::sockopt::linger, 0);
    pub_.bind(Tcp(d.readout()));
    sub_.set(zmq::sockopt::rcvhwm, 0);
    sub_.set(zmq::sockopt::linger, 0);
    sub_.set(zmq::sockopt::subscribe, "");
    sub_.connect(Tcp(d.output()));
  }

  static v1::Histogram Make(const std::string& name, std::uint64_t run,
                            const std::vector<double>& counts,
                            v1::Label label = v1::LABEL_UNSPECIFIED) {
    v1::Histogram h;
    h.set_name(name);
    h.set_run(run);
    h.set_final(true);
    h.set_label(label);
    h.mutable_counts()->Add(counts.begin(), counts.end());
    v1::Axis* axis = h.add_axes();
    axis->set_bins(static_cast<std::uint32_t>(counts.size()));
    axis->set_low(-5.0);
    axis->set_high(5.0);
    return h;
  }

  void Send(const v1::Histogram& h) { SendRaw({h.name(), h.SerializeAsString()}); }

  void SendRaw(const std::vector<std::string>& frames) {
    std::vector<zmq::const_buffer> parts;
    for (const std::string& f : frames) {
      parts.push_back(zmq::buffer(f));
    }
    zmq::send_multipart(pub_, parts);
  }

  // Probes until a probe's verdict comes back: then the daemon's SUB is connected to us.
  bool WaitReady(DaemonProcess& d, std::chrono::seconds timeout = 15s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int i = 0; std::chrono::steady_clock::now() < deadline; ++i) {
      if (!d.Alive()) {
        return false;
      }
      const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
      Send(Make("probe/" + std::to_string(stamp) + "/" + std::to_string(i), 1,
                {3, 4, 5, 6, 7, 8, 9, 3, 4, 5}));
      // A probe's verdict, not just a heartbeat: the daemon's input reaches us too.
      const auto until = std::chrono::steady_clock::now() + 200ms;
      while (std::chrono::steady_clock::now() < until) {
        std::vector<zmq::message_t> frames;
        if (!Poll(50ms) || !zmq::recv_multipart(sub_, std::back_inserter(frames))) {
          continue;
        }
        if (frames[0].to_string().rfind("verdict/probe/", 0) == 0) {
          while (Poll(50ms)) {
            frames.clear();
            (void)zmq::recv_multipart(sub_, std::back_inserter(frames));
          }
          return true;
        }
      }
    }
    return false;
  }

  // Bodies of the messages whose topic starts with `prefix`, until `count` came or the time is
  // up.
  std::vector<std::string> Take(const std::string& prefix, std::size_t count,
                                std::chrono::milliseconds timeout = 10s) {
    std::vector<std::string> got;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      std::vector<zmq::message_t> frames;
      if (!Poll(100ms) || !zmq::recv_multipart(sub_, std::back_inserter(frames))) {
        continue;
      }
      if (frames.size() == 2 && frames[0].to_string().rfind(prefix, 0) == 0) {
        got.push_back(frames[1].to_string());
      }
    }
    return got;
  }

  // Verdicts of `name` until every run in [first, last] has one or the time is up.
  std::map<std::uint64_t, v1::Verdict> Collect(const std::string& name, std::uint64_t first,
                                               std::uint64_t last,
                                               std::chrono::seconds timeout = 20s) {
    std::map<std::uint64_t, v1::Verdict> got;
    const std::string topic = "verdict/" + name;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (got.size() < last - first + 1 && std::chrono::steady_clock::now() < deadline) {
      std::vector<zmq::message_t> frames;
      if (!Poll(100ms) || !zmq::recv_multipart(sub_, std::back_inserter(frames))) {
        continue;
      }
      if (frames.size() == 2 && frames[0].to_string() == topic) {
        v1::Verdict v;
        v.ParseFromArray(frames[1].data(), static_cast<int>(frames[1].size()));
        if (v.run() >= first && v.run() <= last) {
          got[v.run()] = v;
        }
      }
    }
    return got;
  }

 private:
  bool Poll(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{sub_.handle(), 0, ZMQ_POLLIN, 0};
    return zmq::poll(&item, 1, timeout) > 0;
  }

  zmq::context_t ctx_;
  zmq::socket_t pub_;
  zmq::socket_t sub_;
};

// One command to the daemon's control socket; nothing when it does not answer in time.
// With `curve` = {server public, client public, client secret} the client speaks CurveZMQ.
struct CurveClient {
  std::string server_public, client_public, client_secret;
};

inline std::optional<v1::Reply> Call(const DaemonProcess& d, const v1::Command& command,
                                     const std::optional<CurveClient>& curve = std::nullopt,
                                     std::chrono::milliseconds timeout = 5s) {
  zmq::context_t ctx;
  zmq::socket_t req(ctx, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  if (curve) {
    req.set(zmq::sockopt::curve_serverkey, curve->server_public);
    req.set(zmq::sockopt::curve_publickey, curve->client_public);
    req.set(zmq::sockopt::curve_secretkey, curve->client_secret);
  }
  req.connect(Tcp(d.control()));
  req.send(zmq::buffer(command.SerializeAsString()));
  zmq::pollitem_t item{req.handle(), 0, ZMQ_POLLIN, 0};
  zmq::message_t reply;
  if (zmq::poll(&item, 1, timeout) <= 0 || !req.recv(reply)) {
    return std::nullopt;
  }
  v1::Reply r;
  r.ParseFromArray(reply.data(), static_cast<int>(reply.size()));
  return r;
}

// GET http://127.0.0.1:port/path; the body, or "" on failure.
inline std::string HttpGet(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request =
      "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    response.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of one Prometheus sample line ("name{labels}"), or -1 when absent.
inline double MetricValue(const std::string& metrics, const std::string& sample) {
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(sample + " ", 0) == 0) {
      return std::stod(line.substr(sample.size() + 1));
    }
  }
  return -1.0;
}

}  // namespace dinamo::testing
