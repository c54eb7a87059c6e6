// Mounting and INIT negotiation.
#pragma once

#include "corofuse/session/init.hpp"
#include "corofuse/session/mount.hpp"
