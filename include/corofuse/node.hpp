// The node layer: a filesystem as a tree of node objects, with node ids, lookup counts, FORGET,
// names, hard links and listings kept by the framework (node/tree.hpp).
#pragma once

#include "corofuse/node/inode.hpp"
#include "corofuse/node/tree.hpp"
