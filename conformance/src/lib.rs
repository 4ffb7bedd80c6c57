//! The conformance suite every Shorty backend must pass.
//!
//! It runs a backend's binary on free ports with temporary data directories
//! and checks its behaviour through the wire only, so one suite serves both
//! backends. A backend's integration test is one line:
//!
//! ```no_run
//! # #![allow(unnameable_test_items)]
//! // In a backend's `tests/conformance.rs`, the path is
//! // `env!("CARGO_BIN_EXE_shorty-uring")`.
//! shorty_conformance::suite!("target/release/shorty-uring");
//! # fn main() {}
//! ```
//!
//! which expands to one `#[test]` per case, so cases run in parallel and
//! fail separately.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
pub mod browser;
pub mod cases;
pub mod cluster;
pub mod crash_loop;
pub mod disk_full;
pub mod forward;
pub mod harness;
pub mod keys;
pub mod life;
pub mod listing;
pub mod redis_faults;
pub mod remedies;
pub mod rings;
pub mod stats;
pub mod v2;
pub mod wire;

/// Expands to one `#[test]` per conformance case against `$binary`.
#[macro_export]
macro_rules! suite {
    ($binary:expr) => {
        $crate::suite!(@cases $binary;
            seed_exchange,
            typed_round_trips,
            pipelined_replies_in_order,
            oversized_frame_is_refused_from_its_header,
            bad_messages_get_errors_and_the_connection_survives,
            vanishing_peers_leak_nothing,
            idle_connections_are_closed,
            slow_frames_are_cut_off,
            max_connections_applies_back_pressure,
            persistence_across_restart,
            relative_data_dir,
            acknowledged_urls_survive_kill_9,
            graceful_shutdown_answers_in_flight_requests,
            a_draining_server_turns_new_clients_away,
            delay_overlaps_across_clients,
            http_redirects_to_the_long_url,
            http_redirect_status_is_configurable,
            http_keep_alive_and_pipelining,
            http_bad_requests_are_answered_and_closed,
            http_slow_heads_time_out,
            a_second_instance_on_one_data_dir_is_refused,
            an_address_already_served_is_refused,
            damage_to_acknowledged_data_is_refused_not_cut,
            a_full_disk_is_survived_and_recovered_from,
            a_long_disk_full_outage_leaks_no_fds_and_burns_no_segment_numbers,
            metrics_count_what_happens_on_the_admin_listener,
            config_file_environment_and_flags_layer,
            http_requests_a_proxy_could_misread_are_refused,
            export_and_import_move_every_link,
            moving_segments_aside_never_reuses_codes_or_numbers,
            moving_a_segment_aside_and_reapplying_the_export_difference,
            copying_a_running_server_as_the_readme_says_restores_every_link,
            a_backup_of_the_files_the_readme_names_restores_everything,
            restoring_a_backup_then_importing_a_later_export_brings_later_links_back,
            a_damaged_sealed_segment_s_links_come_back_from_an_export_of_a_copy,
            a_damaged_segment_s_links_come_back_from_an_export_of_a_copy,
            a_damaged_segment_moved_aside_and_back_keeps_its_deleted_links_deleted,
            the_systemd_unit_verifies,
            recovery_extends_the_systemd_start_timeout,
            the_redis_store_never_hands_out_a_route_word,
            a_peer_that_never_reads_is_closed_and_others_are_served,
            a_reply_written_long_ago_is_not_taken_for_a_stalled_write,
            a_reply_larger_than_the_socket_buffers_arrives_whole,
            idle_after_replies_read_late_is_closed_at_the_idle_timeout,
            a_deadline_during_a_long_write_is_answered_once_it_is_out,
            clients_beyond_the_limit_are_told_after_the_queue_timeout,
            queued_clients_are_told_when_shutdown_begins,
            clients_cannot_take_the_descriptors_the_log_needs,
            reads_cannot_take_the_descriptors_the_log_needs,
            one_address_cannot_take_every_slot,
            a_silent_connection_holds_no_slot_until_it_speaks,
            a_reset_connection_in_a_burst_gives_its_address_count_back,
            a_burst_taken_ahead_is_served_or_told_never_held_in_silence,
            a_core_accepts_more_connections_than_a_counter_holds,
            // The public front (issue 24).
            http_redirects_forward_the_visitors_query,
            http_absolute_form_targets_are_served,
            http_oversized_requests_are_read_before_the_close,
            http_forwarded_query_clashes_follow_the_operators_rule,
            oversized_frames_are_read_before_the_close,
            // Merge (issue 19).
            sigusr1_merges_under_load_and_loses_nothing,
            a_merge_keeps_deletes_and_updates_across_a_restart,
            // The web page (issue 22).
            browser_page_loads_and_a_links_qr_code_leads_to_its_target,
            the_page_is_off_with_ui_off,
            qr_codes_hold_the_public_url,
            browser_full_flow_through_the_api,
            // ----- engineer WIRE: protocol v2 end to end (issue 19) -----
            v2_is_negotiated_and_version_1_is_unchanged,
            v2_aliases_conflict_and_route_words_are_refused,
            v2_expired_and_disabled_links_are_gone,
            v2_click_limits_and_redirect_statuses,
            v2_updates_and_deletes_hold_on_every_core_and_after_restart,
            v2_generated_codes_never_equal_an_alias,
            v2_changes_to_uncached_links_are_answered,
            v2_updates_and_deletes_survive_kill_9,
            v2_stats_and_info_count_the_redirects,
            // Click statistics (issue 20).
            clicks_are_counted_exactly_apart_by_kind_and_survive_restart,
            clicks_survive_kill_9_minus_at_most_the_last_interval,
            clicks_of_every_node_add_up_in_the_redis_store,
            // The JSON API, keys and --auth (issue 21).
            api_creates_and_reads_links,
            api_keys_scopes_and_revoke,
            a_public_bind_requires_keys_for_writes,
            rate_limits_answer_429_with_retry_after,
            blocked_destinations_and_credentials_are_refused,
            // ----- engineer APIINT: API link calls on the operations -----
            api_links_conflict_expire_and_belong_to_their_key,
            // ----- engineer STATS: statistics of aliases, Redis read side (issue 20) -----
            alias_clicks_are_counted_and_a_reclaimed_alias_starts_from_zero,
            // ----- engineer LIFE: click limits that last (issue 19) -----
            click_limits_survive_sigterm_and_kill_9,
            // ----- engineer LIST: listings and bulk creation (issue 21) -----
            api_lists_each_keys_links_newest_first_while_links_are_made,
            api_bulk_creates_answer_per_item,
            a_listing_after_many_deletes_is_served_in_bounded_steps,
            // ----- engineer MEASURE: per-link query forwarding (issue 24) -----
            forward_query_per_link_wins_over_the_flag_through_the_wire,
            forward_query_per_link_through_the_json_api,
            forward_query_is_carried_by_export_and_import,
            forward_query_per_link_in_the_redis_store,
            // ----- engineer KEYS (issue 21: per-key limits, abuse tools) -----
            a_key_s_own_create_rate_replaces_the_defaults,
            disable_destination_disables_links_already_made,
            links_to_this_server_itself_are_refused,
            redis_cluster_stats_are_read_back_summed_across_nodes,
            clicks_survive_kill_9_read_back_through_the_wire,
            // ----- engineer LIFE: merge forgets tombstones (issue 19) -----
            a_merge_forgets_deleted_codes_which_stay_deleted,
            // ----- lead: review 8 -----
            sighup_without_a_blocklist_is_harmless,
            // ----- engineer STATS6: Redis statistics reads off the core (issue 20) -----
            redis_stats_reads_leave_the_core_serving,
            // ----- lead: reads count clicks on their way to the store -----
            own_clicks_read_back_exactly_while_they_are_flushed,
            own_clicks_read_back_exactly_while_they_are_flushed_to_redis,
            clicks_a_full_redis_refuses_are_read_back_until_it_stores_them,
            clicks_refused_at_a_stop_are_retried_then_reported_lost,
            // ----- lead: the stats writer after a fail-back (review 24) -----
            redis_cluster_clicks_are_stored_after_a_fail_back,
        );
    };
    (@cases $binary:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::cases::$case(::std::path::Path::new($binary));
            }
        )*
    };
}
