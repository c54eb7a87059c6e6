// The test kit: drive a filesystem object in-process with real request bytes (testing/driver.hpp)
// built by testing/requests.hpp, and read the decoded replies. No mount, no root. Not part of
// corofuse.hpp: include it in tests.
#pragma once

#include "corofuse/testing/driver.hpp"
#include "corofuse/testing/requests.hpp"
