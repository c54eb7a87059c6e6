// Requests and replies of the FUSE protocol: parsing, validation, reply writing.
#pragma once

#include "corofuse/proto/op_layout.hpp"
#include "corofuse/proto/reply.hpp"
#include "corofuse/proto/request.hpp"
