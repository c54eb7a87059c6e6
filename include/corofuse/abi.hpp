// The FUSE kernel protocol (7.46) as corofuse's own definitions.
#pragma once

#include "corofuse/abi/flags.hpp"
#include "corofuse/abi/ioctl.hpp"
#include "corofuse/abi/protocol.hpp"
#include "corofuse/abi/structs.hpp"
#include "corofuse/abi/uring.hpp"
