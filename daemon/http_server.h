#pragma once

// A small HTTP/1.1 server on the event loop for /metrics, /healthz and /status. Boost.Beast
// stays inside http_server.cc: its headers are heavy and builds run on two cores.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace dinamo::daemon {

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Answers a GET for `target` (path and query). Runs on the loop's thread.
using HttpHandler = std::function<HttpResponse(std::string_view target)>;

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& io, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Starts accepting on host:port (replacing any earlier listener); the reason on failure.
  std::optional<std::string> Listen(const std::string& host, std::uint16_t port);
  // Stops accepting; connections in progress finish on their own.
  void Close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace dinamo::daemon
