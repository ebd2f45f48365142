#include "http_server.h"

#include <chrono>
#include <utility>  // before Asio: Boost 1.74 misses it under C++20

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace dinamo::daemon {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

// One connection: read requests and answer them until the client closes or goes quiet.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<HttpHandler> handler)
      : stream_(std::move(socket)), handler_(std::move(handler)) {}

  void Start() { Read(); }

 private:
  void Read() {
    request_ = {};
    stream_.expires_after(std::chrono::seconds(10));
    http::async_read(
        stream_, buffer_, request_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    if (ec) {
      Close();  // end of stream, timeout or a malformed request: nothing to answer
      return;
    }
    HttpResponse answer;
    if (request_.method() != http::verb::get && request_.method() != http::verb::head) {
      answer = {405, "text/plain; charset=utf-8", "only GET\n"};
    } else {
      answer = (*handler_)(std::string_view(request_.target().data(), request_.target().size()));
    }
    response_ = {};
    response_.version(request_.version());
    response_.result(answer.status);
    response_.set(http::field::server, "dinamod");
    response_.set(http::field::content_type, answer.content_type);
    response_.keep_alive(request_.keep_alive());
    if (request_.method() != http::verb::head) {
      response_.body() = std::move(answer.body);
    }
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this()](beast::error_code wec, std::size_t) {
                        if (wec || !self->response_.keep_alive()) {
                          self->Close();
                          return;
                        }
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  std::shared_ptr<HttpHandler> handler_;
};

}  // namespace

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(asio::io_context& context, HttpHandler h)
      : io(context), handler(std::make_shared<HttpHandler>(std::move(h))) {}

  void Accept() {
    acceptor->async_accept(
        [self = shared_from_this(), acc = acceptor](beast::error_code ec, tcp::socket socket) {
          if (ec == asio::error::operation_aborted || !acc->is_open()) {
            return;  // closed
          }
          if (!ec) {
            std::make_shared<Session>(std::move(socket), self->handler)->Start();
          }
          if (self->acceptor == acc) {
            self->Accept();
          }
        });
  }

  asio::io_context& io;
  std::shared_ptr<HttpHandler> handler;
  std::shared_ptr<tcp::acceptor> acceptor;
};

HttpServer::HttpServer(asio::io_context& io, HttpHandler handler)
    : impl_(std::make_shared<Impl>(io, std::move(handler))) {}

HttpServer::~HttpServer() { Close(); }

std::optional<std::string> HttpServer::Listen(const std::string& host, std::uint16_t port) {
  beast::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) {
    return "bad address " + host + ": " + ec.message();
  }
  auto acceptor = std::make_shared<tcp::acceptor>(impl_->io);
  const tcp::endpoint endpoint(address, port);
  if (acceptor->open(endpoint.protocol(), ec); ec) {
    return "open: " + ec.message();
  }
  acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (acceptor->bind(endpoint, ec); ec) {
    return "bind " + host + ":" + std::to_string(port) + ": " + ec.message();
  }
  if (acceptor->listen(asio::socket_base::max_listen_connections, ec); ec) {
    return "listen: " + ec.message();
  }
  Close();
  impl_->acceptor = std::move(acceptor);
  impl_->Accept();
  return std::nullopt;
}

void HttpServer::Close() {
  if (impl_->acceptor) {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
    impl_->acceptor.reset();
  }
}

}  // namespace dinamo::daemon
