// dm-thin pool messages ("dmsetup message <pool> 0 ..."), parsed.
#pragma once

#include <cstdint>
#include <string>

namespace sk::thin {

struct Message {
    enum Kind {
        create_thin,
        create_snap,
        delete_device,
        set_transaction_id,
        reserve_metadata_snap,
        release_metadata_snap
    } kind;
    uint64_t a = 0, b = 0;  // ids, or the current and new transaction ids
};

// Throws Error(Fault::bad_message) saying why for an unknown message, a wrong argument count,
// or a number that is not a plain decimal (device ids must fit 24 bits).
Message parse_message(const std::string& msg);

}  // namespace sk::thin
