//! Integration tests: the real service over HTTP against the local PostgreSQL.

mod amqp;
mod helpers;
mod relay;

mod auth;
mod batch;
mod billing;
mod billing_at_rest;
mod cache;
mod client;
mod cluster;
mod erasure;
mod events;
mod failover;
mod frozen_postgres;
mod frozen_rabbitmq;
mod frozen_redis;
mod history;
mod hostile;
mod ledger;
mod ledger_rpc;
mod limits;
mod listing;
mod nestjs;
mod openapi;
mod oversized;
mod rabbitmq_cluster;
mod resilience;
mod restore;
mod rpc;
mod search;
mod slow_clients;
mod startup;
mod supervision;
mod trace_context;
mod users;
