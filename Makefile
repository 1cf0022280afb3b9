# Shopify <-> Business Central connector: top-level build.
#
#   make          build the nginx module and the worker (make module,
#                 make worker: one of them)
#   make test     install what is missing, then run every suite
#   make unit     the worker's cmocka unit tests alone (no services)
#   make lint     the module's layout rules (scripts/lint.sh)
#   make valgrind the module's suites with nginx under valgrind's memcheck
#                 (several minutes; see t/README.md)
#   make bench    the intake bench, then the worker bench (bench/README.md)
#   make bench-worker  the worker bench alone
#   make bench-redis-floor  how low Redis's share of a delivery can go
#   make soak     the chaos test's long version: 20 seeded runs of
#                 t/160-chaos.t (CHAOS_RUNS, SEED; about 8 minutes)
#   make demo     install what is missing, bring the stack up, deliver the
#                 fixture orders and show the BC sales orders they became
#   make up/down  start/stop the local stack in the background
#   make clean    remove the build directories

BUILD      ?= build
MODULE_SO  := $(BUILD)/nginx/ngx_http_shopify_module.so
WORKER_BIN := worker/build/shopify-bc-worker

MODULE_SRCS := $(wildcard ngx_shopify_module/*.c ngx_shopify_module/*.h) config

# the suites that drive the module, run by `make valgrind`
VALGRIND_TESTS ?= t/010-webhook.t t/011-intake-features.t \
                  t/012-intake-workers.t t/020-intake-redis.t \
                  t/021-intake-redis-auth.t t/022-intake-reload.t \
                  t/050-oauth.t t/051-oauth-install.t t/053-oauth-callback.t

.PHONY: all module worker deps test unit demo up down clean lint bench \
        bench-worker bench-redis-floor valgrind soak

all: module worker

deps:
	@scripts/install-deps.sh

module: $(MODULE_SO)

$(MODULE_SO): $(MODULE_SRCS)
	scripts/build-module.sh $(BUILD)/nginx

worker:
	$(MAKE) -C worker

lint:
	scripts/lint.sh

unit: worker
	$(MAKE) -C worker test

test: deps
	$(MAKE) all
	scripts/test.sh

valgrind: deps
	$(MAKE) all
	TEST_NGINX_USE_VALGRIND=1 scripts/test.sh $(VALGRIND_TESTS)

# `make test` runs t/160-chaos.t with 2 runs; this runs it with 20 (or
# CHAOS_RUNS), from SEED when given
CHAOS_RUNS ?= 20
soak: deps
	$(MAKE) all
	CHAOS_RUNS=$(CHAOS_RUNS) scripts/test.sh t/160-chaos.t

demo: deps
	$(MAKE) all
	scripts/demo.sh

# the intake bench, then the worker bench; both run even when the first
# fails a bar (BENCH_STRICT=1), and the exit status reports either
bench: deps
	$(MAKE) all
	@status=0; bench/intake.sh || status=$$?; \
	bench/worker.sh || status=$$?; exit $$status

bench-worker: deps
	$(MAKE) worker
	bench/worker.sh

bench-redis-floor: deps
	python3 bench/redis-floor.py

up: deps
	$(MAKE) all
	scripts/stack.sh up

down:
	scripts/stack.sh down

clean:
	rm -rf $(BUILD) t/servroot
	$(MAKE) -C worker clean
