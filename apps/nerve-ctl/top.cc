#include "top.hpp"

#include <curses.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <chrono>
#include <algorithm>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "../common/control.hpp"

namespace nerve::app {

namespace {

// One scrape: "name{labels}" -> value (labels kept as written, node label included).
using Scrape = std::map<std::string, double>;

std::optional<Scrape> scrape(const std::string& listen) {
  const auto colon = listen.rfind(':');
  httplib::Client http(listen.substr(0, colon), std::stoi(listen.substr(colon + 1)));
  http.set_connection_timeout(0, 300'000);
  http.set_read_timeout(1);
  const auto res = http.Get("/metrics");
  if (!res || res->status != 200) return std::nullopt;
  Scrape out;
  std::istringstream in(res->body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

double get(const Scrape& s, const std::string& key) {
  const auto it = s.find(key);
  return it == s.end() ? 0.0 : it->second;
}

std::string si(double v) {
  if (v >= 1e9) return fmt::format("{:.2f}G", v / 1e9);
  if (v >= 1e6) return fmt::format("{:.2f}M", v / 1e6);
  if (v >= 1e4) return fmt::format("{:.1f}k", v / 1e3);
  return fmt::format("{:.0f}", v);
}

// The value of label `name` in a series key ("" without it).
std::string label_of(const std::string& key, std::string_view name) {
  const std::string at = fmt::format("{}=\"", name);
  const auto p = key.find(at);
  if (p == std::string::npos) return {};
  const auto from = p + at.size();
  return key.substr(from, key.find('"', from) - from);
}

std::string usec(double s) { return s <= 0 ? "-" : fmt::format("{:.1f}", s * 1e6); }

struct NodeView {
  const config::Node* node;
  std::optional<Scrape> prev, cur;
  double dt = 0;
  std::string routes;  // from the node's nerved, when its control socket is on this host
};

// The node's routes in a line: each destination and its next hop, per lane where lanes differ
// ("4→2[P0-P2] 3[P3-P4]"); empty if its nerved cannot be asked from here.
std::string routes_line(const config::Node& node) {
  std::error_code ec;
  if (!std::filesystem::exists(node.control_socket, ec)) return {};
  std::string err;
  const auto rep = control_call(node.control_socket, {{"op", "routes"}}, err, 300);
  if (!rep || !rep->contains("routes")) return {};
  std::string out;
  for (const auto& r : (*rep)["routes"]) {
    std::vector<std::pair<int, std::vector<int>>> hops;  // next hop, its lanes
    for (const auto& l : r["lanes"]) {
      const int nh = l["next_hop"].is_number() ? l["next_hop"].get<int>() : 0;
      auto it = std::find_if(hops.begin(), hops.end(), [&](const auto& h) { return h.first == nh; });
      if (it == hops.end()) it = hops.insert(hops.end(), {nh, {}});
      it->second.push_back(l["lane"].get<int>());
    }
    std::string via;
    for (const auto& [nh, lanes] : hops) {
      const std::string hop = nh == 0 ? "-" : std::to_string(nh);
      via += hops.size() == 1 ? hop : fmt::format("{}{}[P{}]", via.empty() ? "" : " ", hop, fmt::join(lanes, ","));
    }
    fmt::format_to(std::back_inserter(out), " {}→{}", r["dst"].get<int>(), via);
  }
  return out.empty() ? std::string{} : "  routes (destination→next hop[lanes]):" + out;
}

// One frame of text: a block per node (lanes, ports, links, alerts), rates over the last interval.
std::vector<std::string> frame(const std::vector<NodeView>& views, const std::string& cluster) {
  std::vector<std::string> out;
  out.push_back(fmt::format("nerve top: cluster {}, {} nodes", cluster, views.size()));
  for (const auto& v : views) {
    const std::string n = fmt::format("node=\"{}\"", v.node->name);
    out.emplace_back();
    if (!v.cur) {
      out.push_back(fmt::format("node {} ({}): no sidecar answers at {}", v.node->id, v.node->name,
                                v.node->metrics_listen.empty() ? "(no metrics_listen)" : v.node->metrics_listen));
      continue;
    }
    const Scrape& c = *v.cur;
    if (get(c, fmt::format("nerve_up{{{}}}", n)) != 1) {
      out.push_back(fmt::format("node {} ({}): DOWN (its sidecar waits for it)", v.node->id, v.node->name));
      continue;
    }
    auto rate = [&](const std::string& key) {
      if (!v.prev || v.dt <= 0) return 0.0;
      return std::max(0.0, (get(c, key) - get(*v.prev, key)) / v.dt);
    };
    const double busy = get(c, fmt::format("nerve_datapath_busy_ratio{{{}}}", n));
    const double free_mbufs = get(c, fmt::format("nerve_mempool_mbufs{{{},state=\"free\"}}", n));
    const double used_mbufs = get(c, fmt::format("nerve_mempool_mbufs{{{},state=\"in_use\"}}", n));
    double refused = 0;
    for (const auto& [k, val] : c)
      if (k.rfind("nerve_refused_total{", 0) == 0) refused += rate(k);
    out.push_back(fmt::format("node {} ({})  datapath busy {:.0f}%  mbufs in use {}/{}  refused {}/s", v.node->id,
                              v.node->name, busy * 100, si(used_mbufs), si(free_mbufs + used_mbufs), si(refused)));
    out.push_back(fmt::format("  {:<4} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}", "lane", "sent/s", "recv/s",
                              "p50 us", "p99 us", "max us", "budget", "miss/s", "queued"));
    for (int l = 0; l < 5; ++l) {
      const std::string lb = fmt::format("{},lane=\"P{}\"", n, l);
      auto q = [&](const char* quant) {
        return get(c, fmt::format("nerve_lane_latency_seconds{{{},quantile=\"{}\"}}", lb, quant));
      };
      out.push_back(fmt::format("  P{:<3} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}", l,
                                si(rate(fmt::format("nerve_lane_sent_total{{{}}}", lb))),
                                si(rate(fmt::format("nerve_lane_delivered_total{{{}}}", lb))), usec(q("0.5")),
                                usec(q("0.99")), usec(q("1")),
                                usec(get(c, fmt::format("nerve_lane_budget_seconds{{{}}}", lb))),
                                si(rate(fmt::format("nerve_lane_deadline_misses_total{{{}}}", lb))),
                                si(get(c, fmt::format("nerve_lane_tx_queued{{{}}}", lb)))));
    }
    std::string ports = "  ports:";
    for (const auto& [k, val] : c) {
      if (k.rfind("nerve_port_rx_packets_total{", 0) != 0) continue;
      const std::string port = label_of(k, "port");
      const std::string lb = fmt::format("{},port=\"{}\"", n, port);
      ports += fmt::format(" [{} rx {}/s tx {}/s missed {}/s link {}]", port,
                           si(rate(fmt::format("nerve_port_rx_packets_total{{{}}}", lb))),
                           si(rate(fmt::format("nerve_port_tx_packets_total{{{}}}", lb))),
                           si(rate(fmt::format("nerve_port_rx_missed_total{{{}}}", lb))),
                           get(c, fmt::format("nerve_port_link_up{{{}}}", lb)) == 1 ? "up" : "DOWN");
    }
    out.push_back(ports);
    std::string links = "  links:";
    for (const auto& [k, val] : c) {
      if (k.rfind("nerve_link_up{", 0) != 0) continue;
      const std::string peer = label_of(k, "peer");
      links += fmt::format(" [{} {} rtt {} us]", peer, val == 1 ? "up" : "DOWN",
                           usec(get(c, fmt::format("nerve_link_rtt_seconds{{{},peer=\"{}\"}}", n, peer))));
    }
    out.push_back(links);
    std::string warn;
    for (const auto& [k, val] : c)
      if (k.rfind("nerve_warning{", 0) == 0 && val == 1) fmt::format_to(std::back_inserter(warn), " {}", label_of(k, "condition"));
    if (!v.routes.empty()) out.push_back(v.routes);
    if (!warn.empty()) out.push_back(fmt::format("  WARNING:{}", warn));
  }
  return out;
}

std::atomic<bool> g_quit{false};
extern "C" void on_quit(int) { g_quit.store(true); }

}  // namespace

int top(const config::Cluster& cluster, double interval_s, unsigned frames, bool plain) {
  std::vector<NodeView> views;
  for (const auto& n : cluster.nodes) views.push_back(NodeView{&n, std::nullopt, std::nullopt, 0});
  if (std::none_of(cluster.nodes.begin(), cluster.nodes.end(), [](const auto& n) { return !n.metrics_listen.empty(); })) {
    fmt::print(stderr, "nerve-ctl: top: no node of {} has a metrics_listen (the sidecars serve nothing)\n",
               cluster.source.string());
    return 2;
  }
  auto poll_all = [&] {
    for (auto& v : views) {
      v.prev = std::move(v.cur);
      v.cur = v.node->metrics_listen.empty() ? std::nullopt : scrape(v.node->metrics_listen);
      v.routes = v.cur ? routes_line(*v.node) : std::string{};
      v.dt = interval_s;
    }
  };
  struct sigaction sa {};
  sa.sa_handler = on_quit;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  const auto step = std::chrono::duration<double>(interval_s);
  poll_all();
  if (plain) {
    // Text frames, one per interval (the first after one interval: rates need two scrapes).
    for (unsigned f = 0; f < frames && !g_quit.load(); ++f) {
      std::this_thread::sleep_for(step);
      poll_all();
      for (const auto& l : frame(views, cluster.name)) fmt::print("{}\n", l);
      fmt::print("\n");
      std::fflush(stdout);
    }
    return 0;
  }
  initscr();
  cbreak();
  noecho();
  curs_set(0);
  timeout(static_cast<int>(interval_s * 1000));
  unsigned shown = 0;
  while (!g_quit.load() && (frames == 0 || shown < frames)) {
    const int ch = getch();  // waits one interval
    if (ch == 'q' || ch == 'Q') break;
    poll_all();
    erase();
    int row = 0;
    for (const auto& l : frame(views, cluster.name)) mvaddnstr(row++, 0, l.c_str(), COLS - 1);
    mvaddnstr(LINES - 1, 0, "q: quit", COLS - 1);
    refresh();
    ++shown;
  }
  endwin();
  return 0;
}

}  // namespace nerve::app
