// The one include a filesystem author needs: the handler types, the context, io_uring
// operations, and session::main / session::serve to mount and serve.
#pragma once

#include "corofuse/abi.hpp"
#include "corofuse/base/log.hpp"
#include "corofuse/fs/caller_credentials.hpp"
#include "corofuse/fs/connection.hpp"
#include "corofuse/fs/context.hpp"
#include "corofuse/fs/dispatch.hpp"
#include "corofuse/fs/result.hpp"
#include "corofuse/fs/types.hpp"
#include "corofuse/io.hpp"
#include "corofuse/node.hpp"
#include "corofuse/proto.hpp"
#include "corofuse/session.hpp"
