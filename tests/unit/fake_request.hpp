// Hand-built FUSE requests for corofuse's unit tests: the test kit's (corofuse/testing/requests.hpp).
#pragma once

#include "corofuse/testing/requests.hpp"
