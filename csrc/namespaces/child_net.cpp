// A new network namespace starts with only a loopback interface, and that one is down.
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "namespaces/child_steps.hpp"

namespace sk::ns {

const char* bring_up_loopback() {
    int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0) return "socket for lo";
    struct ifreq ifr;
    std::memset(&ifr, 0, sizeof ifr);
    std::memcpy(ifr.ifr_name, "lo", 3);
    const char* step = nullptr;
    if (::ioctl(sock, SIOCGIFFLAGS, &ifr) != 0) {
        step = "get lo flags";
    } else {
        ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
        if (::ioctl(sock, SIOCSIFFLAGS, &ifr) != 0) step = "bring up lo";
    }
    int saved = errno;
    ::close(sock);
    errno = saved;
    return step;
}

}  // namespace sk::ns
