// io_uring under C++20 coroutines: the ring, tasks, awaitable operations.
#pragma once

#include "corofuse/io/cancellation.hpp"
#include "corofuse/io/frame_pool.hpp"
#include "corofuse/io/operations.hpp"
#include "corofuse/io/ring.hpp"
#include "corofuse/io/scope.hpp"
#include "corofuse/io/sync_wait.hpp"
#include "corofuse/io/task.hpp"
#include "corofuse/io/when_all.hpp"
