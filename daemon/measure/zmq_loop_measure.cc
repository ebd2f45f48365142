// How ZeroMQ should meet the Asio loop: a measurement behind daemon/README.md. A PUB in its own
// thread sends N messages of the size of a 100-bin histogram; the receiving side takes them
// (a) on the loop's thread by watching the SUB's ZMQ_FD, draining until ZMQ_EVENTS is empty,
// or (b) in a receive thread that posts each message to the loop. Prints messages per second.
// Build: cmake --build build --target dinamod-measure-loop; run: dinamod-measure-loop [N]

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>  // before Asio: Boost 1.74 misses it under C++20
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

void Publish(zmq::context_t& ctx, const std::string& endpoint, int n, std::atomic<bool>& go) {
  zmq::socket_t pub(ctx, zmq::socket_type::pub);
  pub.set(zmq::sockopt::sndhwm, 0);
  pub.bind(endpoint);
  while (!go) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const std::string body(830, 'x');  // a serialised 100-bin Histogram
  for (int i = 0; i <= n; ++i) {
    pub.send(zmq::str_buffer("VELO/ClusterSize"), zmq::send_flags::sndmore);
    pub.send(zmq::buffer(body));
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
}

double WatchFd(int n) {
  zmq::context_t ctx;
  std::atomic<bool> go{false};
  std::thread pub(Publish, std::ref(ctx), "inproc://fd", n, std::ref(go));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::rcvhwm, 0);
  sub.set(zmq::sockopt::subscribe, "");
  sub.connect("inproc://fd");
  asio::io_context io;
  asio::posix::stream_descriptor fd(io, sub.get(zmq::sockopt::fd));
  int got = 0;
  Clock::time_point start;
  std::function<void()> wait;
  std::vector<zmq::message_t> frames;
  const auto drain = [&] {
    while (zmq::recv_multipart(sub, std::back_inserter(frames), zmq::recv_flags::dontwait)) {
      if (got++ == 0) start = Clock::now();
      frames.clear();
      if (got == n + 1) return io.stop();
    }
    wait();
  };
  wait = [&] { fd.async_wait(asio::posix::stream_descriptor::wait_read, [&](auto) { drain(); }); };
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  go = true;
  wait();
  io.run();
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  fd.release();
  pub.join();
  return n / s;
}

double ReceiveThread(int n) {
  zmq::context_t ctx;
  std::atomic<bool> go{false};
  std::thread pub(Publish, std::ref(ctx), "inproc://thread", n, std::ref(go));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  asio::io_context io;
  auto guard = asio::make_work_guard(io);
  int got = 0;
  Clock::time_point start;
  std::thread receiver([&] {
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::rcvhwm, 0);
    sub.set(zmq::sockopt::subscribe, "");
    sub.connect("inproc://thread");
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    go = true;
    for (int i = 0; i <= n; ++i) {
      auto frames = std::make_shared<std::vector<zmq::message_t>>();
      (void)zmq::recv_multipart(sub, std::back_inserter(*frames));
      asio::post(io, [&, frames] {
        if (got++ == 0) start = Clock::now();
        if (got == n + 1) io.stop();
      });
    }
  });
  io.run();
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  receiver.join();
  pub.join();
  return n / s;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 200000;
  for (int round = 0; round < 3; ++round) {
    std::printf("round %d: ZMQ_FD on the loop %.0f msg/s, receive thread + post %.0f msg/s\n",
                round, WatchFd(n), ReceiveThread(n));
  }
}
