#pragma once

// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, so that a Type=notify unit
// knows when dinamod is ready, reloading or stopping. Does nothing outside systemd.

#include <string_view>

namespace dinamo::daemon {

// Sends `state` ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=..."); false when there is no
// $NOTIFY_SOCKET or the datagram could not be sent.
bool NotifySystemd(std::string_view state);

}  // namespace dinamo::daemon
