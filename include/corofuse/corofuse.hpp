// The one include a filesystem author needs.
#pragma once

#include "corofuse/abi.hpp"
#include "corofuse/io.hpp"
#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/result.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/proto.hpp"
#include "corofuse/session.hpp"
