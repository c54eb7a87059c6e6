// Mounting, INIT negotiation and serving: session::serve and session::main.
#pragma once

#include "corofuse/session/init.hpp"
#include "corofuse/session/mount.hpp"
#include "corofuse/session/options.hpp"
#include "corofuse/session/own_options.hpp"
#include "corofuse/session/serve.hpp"
