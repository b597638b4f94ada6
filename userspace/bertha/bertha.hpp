// One include for applications: the core API and the udp base chunnel.
#pragma once

#include "bertha/addr.hpp"
#include "bertha/buffer.hpp"
#include "bertha/chunnel.hpp"
#include "bertha/error.hpp"
#include "bertha/select.hpp"
#include "bertha/stack.hpp"
#include "bertha/udp.hpp"
