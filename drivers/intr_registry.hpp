// The interrupt callbacks PMDs register with the EAL, seen (and wrapped) on their way in.
//
// This file defines, for the whole process, the EAL's rte_intr_callback_register and its
// unregister functions (exported from every executable that links the drivers, so the PMDs
// the EAL loads as plugins call them), and forwards to the EAL's own. It does two things the
// EAL offers no hook for:
//
//  1. Every callback runs wrapped: the datapath is paused around it (datapath_guard.hpp), so a
//     PMD's link event (memif unmapping a link's rings when the peer goes away) never runs
//     during a burst on that link.
//  2. Registrations are recorded, so a callback a PMD forgets can be removed. DPDK 22.11's
//     memif, when it removes the last device of a listening (server) socket, frees the socket
//     without unregistering the listener's callback or closing its fd
//     (drivers/net/memif/memif_socket.c, memif_socket_remove_device): the EAL's source list
//     keeps an entry in rte_malloc memory that the interrupt thread reads at its next rebuild,
//     which rte_eal_cleanup triggers just before it unmaps that memory (SIGSEGV at exit).
//
// Control plane and interrupt thread only.
#pragma once

#include <string>

namespace nerve::drivers {

// Unregisters every interrupt callback on a listening unix socket bound to `path`, and closes
// the socket. Returns the number of callbacks removed. Call on the interrupt thread
// (run_on_interrupt_thread), after the device that used the socket is gone.
unsigned release_unix_listener(const std::string& path);

}  // namespace nerve::drivers
