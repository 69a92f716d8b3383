// The cloned child's side of spawn_container.
#pragma once

#include "namespaces/child_plan.hpp"

namespace sk::ns {

// Set up the container as the plan says and exec its command; on any failure report it on
// plan.report_fd and _exit. Never returns. Runs in a copy of a multithreaded process, with
// every signal blocked by the parent (see child_steps.hpp for what that allows).
[[noreturn]] void run_container_child(const ChildPlan& plan);

}  // namespace sk::ns
