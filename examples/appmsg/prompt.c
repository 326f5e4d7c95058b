/*
 * appmsg prompt (and appmsg with no command): requests typed, or read from a pipe.
 *
 *   appmsg [prompt] [HOST:PORT]
 *   ACTION [key=TEXT ...] [key:=JSON ...]     a request, as appmsg call takes it
 *   help [ACTION]                             the actions (from describe), or one
 *   quit, exit, or the end of the input
 *
 * On a terminal, with libedit: line editing, a history kept across runs (bounded), and tab
 * completion of action names and of parameter names ("key=") from the service's describe.
 * libedit's callback interface reads one character at a time when the loop sees standard
 * input readable: the prompt waits in the loop's poll, at no cost, and one request is answered
 * before the prompt comes back.  Without a terminal (a pipe, a file) - or without libedit (on
 * Windows) - lines are read as the client's queue takes them, each sent without waiting for the
 * answers before it (pipelined, bounded by the client's queue and in-flight budget), and the
 * answers printed in order.  A connection that is lost is said once; the next request connects
 * again.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#ifdef APPMSG_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include "tool.h"

#define HISTORY_MAX 1000 /* lines kept in the history file */

enum call_kind { CALL_ACTION, CALL_HELP, CALL_QUIET_DESCRIBE };

struct prompt {
  struct appmsg_loop *loop;
  struct appmsg_client *client;
  struct target t;
  struct appmsg_client_opts o;
  struct service_doc doc; /* the last description the service gave (n 0: none yet) */
  int json, color;
  int interactive; /* libedit on a terminal */
  int one_by_one;  /* wait for each answer before reading the next line (a terminal) */
  size_t sent, finished;
  int lost;         /* the connection was lost (or never made): connect again at the next line */
  int reported;     /* the loss was said */
  int status;       /* the exit status so far */
  int quit;         /* the input ended, or quit was typed */
  size_t skip_upto; /* calls numbered below this are not shown (asked for before a Ctrl-C) */
  char prompt_text[ENDPOINT_LEN + 16];
  char *history; /* the history file, or NULL */
  appmsg_socket_t in_fd;
};

/* One call in flight. */
struct pcall {
  struct prompt *p;
  enum call_kind kind;
  int one;    /* a help ACTION: describe of one method */
  size_t seq; /* its number: p->sent when it was made */
};

static struct prompt *the_prompt; /* for libedit's callbacks, which take no user data */

static void set_status(struct prompt *p, int status) {
  /* On a terminal, the last request's, as a shell's; from a pipe the most telling wins: a
   * connection failure, then a usage error, then an error reply. */
  static const int rank[] = {0, 3, 2, 1};
  if (p->interactive || rank[status] > rank[p->status])
    p->status = status;
}

/* ---- help ------------------------------------------------------------------------------------ */

static void print_help_text(const struct prompt *p) {
  printf("Requests: ACTION [key=TEXT ...] [key:=JSON ...], as appmsg call takes them.\n"
         "  help [ACTION]   the actions, or one;  quit (or Ctrl-D) to leave\n");
  if (p->doc.n) {
    printf("Actions of %s:\n", p->t.where);
    for (size_t i = 0; i < p->doc.n; i++)
      printf("  %-16s %s\n", p->doc.actions[i].name,
             p->doc.actions[i].summary ? p->doc.actions[i].summary : "");
  }
}

static void keep_doc(struct prompt *p, const struct appmsg_reply *r) {
  struct service_doc d;
  if (r->status == 0 && r->result_json &&
      service_doc_parse(&d, r->result_json, r->result_json_len, 0) == 0) {
    service_doc_free(&p->doc);
    p->doc = d;
  }
}

/* ---- calls ----------------------------------------------------------------------------------- */

static void show_prompt(struct prompt *p);

static void on_reply(const struct appmsg_reply *r, void *ud) {
  struct pcall *c = ud;
  struct prompt *p = c->p;
  p->finished++;
  if (r->header == NULL) {
    if (!p->reported && c->kind != CALL_QUIET_DESCRIBE) {
      report_failure(&p->t, &p->o, r);
      logf_("(the next request connects again)");
      p->reported = 1;
    }
    if (c->kind != CALL_QUIET_DESCRIBE)
      set_status(p, EXIT_CONN);
    p->lost = 1;
  } else if (c->seq < p->skip_upto && c->kind != CALL_QUIET_DESCRIBE) {
    /* interrupted: not shown */
  } else if (c->kind == CALL_QUIET_DESCRIBE) {
    keep_doc(p, r);
  } else if (c->kind == CALL_HELP) {
    struct service_doc d;
    if (c->one && r->status == APPMSG_E_ERROR_REPLY) {
      printf("no such action (help lists them)\n");
    } else if (c->one && r->result_json &&
               service_doc_parse(&d, r->result_json, r->result_json_len, 1) == 0) {
      print_action(stdout, &d.actions[0], p->color);
      service_doc_free(&d);
    } else {
      keep_doc(p, r);
      print_help_text(p);
      if (p->doc.n == 0)
        printf("(%s does not describe its actions)\n", p->t.where);
    }
    fflush(stdout);
  } else {
    set_status(p, print_reply(r, p->json, p->color, stdout));
  }
  if (p->one_by_one && p->finished == p->sent && c->seq >= p->skip_upto)
    show_prompt(p);
  free(c);
}

/* The client, made again when the last connection was lost. */
static int ensure_client(struct prompt *p) {
  if (p->client && !p->lost)
    return 0;
  appmsg_client_free(p->client); /* (the calls it still had end quietly: reported is set) */
  p->client = NULL;
  int rc = appmsg_client_new(&p->client, p->loop, p->t.ep.host, p->t.ep.port, &p->o);
  if (rc) {
    logf_("cannot start a client: %s", appmsg_strerror(rc));
    return rc;
  }
  p->lost = 0;
  p->reported = 0;
  return 0;
}

/* Sends a request (waiting for room in the client's queue when it is full, outside the loop's
 * callbacks only).  Returns 0, or an error already said. */
static int send_call(struct prompt *p, enum call_kind kind, int one, const char *action,
                     const struct appmsg_arg *args, size_t n, int may_wait) {
  struct appmsg_call call = {0};
  char *body = NULL;
  struct pcall *c = malloc(sizeof *c);
  int rc = c ? appmsg_request_build(&body, &call.len, action, args, n) : -ENOMEM;
  if (rc == 0)
    rc = ensure_client(p);
  if (rc == 0) {
    *c = (struct pcall){p, kind, one, p->sent};
    call.content = body;
    while ((rc = appmsg_client_send(p->client, &call, on_reply, c)) == APPMSG_E_QUEUE_FULL &&
           may_wait) {
      int lrc = appmsg_loop_run_once(p->loop, -1);
      if (lrc < 0) {
        rc = lrc;
        break;
      }
    }
  }
  free(body);
  if (rc == 0) {
    p->sent++;
    return 0;
  }
  free(c);
  if (rc == -EINVAL) {
    logf_("'%s' cannot be sent (not valid UTF-8)", action);
    set_status(p, EXIT_USAGE);
  } else if (p->client) {
    if (!p->reported) {
      report_refused(&p->t, p->client, rc);
      logf_("(the next request connects again)");
    }
    p->reported = 1;
    p->lost = 1;
    set_status(p, EXIT_CONN);
  }
  return rc;
}

/* ---- lines ----------------------------------------------------------------------------------- */

/*
 * Splits a line into words: spaces separate them; '...' keeps text as it is and "..." with
 * backslash escapes, as a shell does, and a backslash escapes the next character - except in
 * the JSON after ":=", which is kept as written up to a space outside its strings and
 * brackets (so that value:={"a": [1, 2]} is one word).  Returns the count (at most max), or -1
 * for an unclosed quote or bracket.  Writes the words into line itself.
 */
static int split_words(char *line, char **words, int max) {
  int n = 0;
  char *r = line, *w = line;
  while (*r) {
    while (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n')
      r++;
    if (!*r)
      break;
    if (n == max)
      return max;
    words[n++] = w;
    int json = 0, depth = 0, in_str = 0;
    while (*r && (json ? (depth > 0 || in_str || (*r != ' ' && *r != '\t'))
                       : (*r != ' ' && *r != '\t' && *r != '\r' && *r != '\n'))) {
      char ch = *r;
      if (json) {
        if (in_str && ch == '\\' && r[1]) {
          *w++ = *r++;
        } else if (ch == '"') {
          in_str = !in_str;
        } else if (!in_str && (ch == '{' || ch == '[')) {
          depth++;
        } else if (!in_str && (ch == '}' || ch == ']')) {
          depth--;
        }
        *w++ = *r++;
      } else if (ch == '\'' || ch == '"') {
        for (r++; *r && *r != ch; r++) {
          if (ch == '"' && *r == '\\' && (r[1] == '"' || r[1] == '\\'))
            r++;
          *w++ = *r;
        }
        if (!*r)
          return -1;
        r++;
      } else if (ch == '\\' && r[1]) {
        r++;
        *w++ = *r++;
      } else {
        if (ch == '=' && w > words[n - 1] && w[-1] == ':')
          json = 1;
        *w++ = *r++;
      }
    }
    if (json && (depth != 0 || in_str))
      return -1;
    char *end = w;
    if (*r)
      r++;
    *end = '\0';
    w = end + 1;
  }
  return n;
}

/* One line typed or read.  Returns 0, or an error already said. */
static int handle_line(struct prompt *p, char *line, int may_wait) {
  char *words[256];
  int n = split_words(line, words, 256);
  if (n < 0) {
    logf_("a quote or a bracket is not closed");
    set_status(p, EXIT_USAGE);
    return -EINVAL;
  }
  if (n == 0 || words[0][0] == '#')
    return 0;
  if (n == 256) {
    logf_("too many words in one request (at most 255 members)");
    set_status(p, EXIT_USAGE);
    return -EINVAL;
  }
  if (strcmp(words[0], "quit") == 0 || strcmp(words[0], "exit") == 0) {
    p->quit = 1;
    return 0;
  }
  if (strcmp(words[0], "help") == 0 || strcmp(words[0], "?") == 0) {
    struct appmsg_arg name = APPMSG_ARG_S("name", n > 1 ? words[1] : NULL);
    return send_call(p, CALL_HELP, n > 1, "describe", &name, n > 1 ? 1 : 0, may_wait);
  }
  struct params prm;
  char err[1024];
  int rc = params_parse(&prm, words + 1, (size_t)(n - 1), err, sizeof err);
  if (rc == 0)
    rc = send_call(p, CALL_ACTION, 0, words[0], prm.args, prm.n, may_wait);
  else if (rc == -EINVAL) {
    logf_("%s", err);
    set_status(p, EXIT_USAGE);
  } else {
    logf_("out of memory");
  }
  params_free(&prm);
  return rc;
}

/* ---- lines without editing: a pipe, a file, or a terminal without libedit ---------------------- */

#ifdef APPMSG_HAVE_LIBEDIT
static void on_line(char *line);
#endif

/* The prompt again; with libedit, typing is read again too. */
static void show_prompt(struct prompt *p) {
#ifdef APPMSG_HAVE_LIBEDIT
  if (p->interactive) {
    rl_callback_handler_install(p->prompt_text, on_line);
    appmsg_loop_modify(p->loop, 0, APPMSG_EV_READ);
    return;
  }
#endif
  fputs(p->prompt_text, stdout);
  fflush(stdout);
}

static int run_plain(struct prompt *p) {
  struct line_input in = {0};
  int err = stdin_open(&p->in_fd);
  in.fd = p->in_fd;
  in.loop = p->loop;
  char *line;
  if (p->one_by_one)
    show_prompt(p);
  while (!p->quit && err == 0 && (line = line_input_next(&in, &err)) != NULL) {
    size_t before = p->sent;
    handle_line(p, line, 1);
    /* On a terminal, the answer before the next prompt (on_reply shows it). */
    while (p->one_by_one && p->finished < p->sent && err == 0) {
      int lrc = appmsg_loop_run_once(p->loop, -1);
      if (lrc < 0)
        err = lrc;
    }
    if (p->one_by_one && p->sent == before && !p->quit)
      show_prompt(p);
  }
  if (p->one_by_one && !p->quit)
    putchar('\n');
  free(in.buf);
  stdin_close(p->in_fd);
  if (err) {
    logf_("cannot read standard input: %s", appmsg_strerror(err));
    set_status(p, EXIT_CONN);
  }
  while (p->finished < p->sent) { /* the last answers */
    int lrc = appmsg_loop_run_once(p->loop, -1);
    if (lrc < 0) {
      logf_("event loop failed: %s", appmsg_strerror(lrc));
      return EXIT_CONN;
    }
  }
  return p->status;
}

/* ---- the terminal, with libedit ------------------------------------------------------------- */

#ifdef APPMSG_HAVE_LIBEDIT

static char *history_path(void) {
  const char *state = getenv("XDG_STATE_HOME"), *home = home_dir();
  char path[4096];
  if (state && *state) {
    snprintf(path, sizeof path, "%s/appmsg", state);
    if (make_dir(path) != 0)
      return NULL;
    snprintf(path, sizeof path, "%s/appmsg/history", state);
  } else if (home && *home) {
    snprintf(path, sizeof path, "%s/.appmsg_history", home);
  } else {
    return NULL;
  }
  return strdup(path);
}

/* The words a completion may offer: built-in commands, actions, or an action's members. */
static const char *const builtin_words[] = {"help", "quit", "exit", NULL};
static char completion_action[256]; /* the action whose members are completed, or "" */
static int completing_help;         /* the word after "help": actions only */

static char *complete_next(const char *text, int state) {
  static size_t i, b;
  struct prompt *p = the_prompt;
  size_t tl = strlen(text);
  if (state == 0)
    i = b = 0;
  if (completion_action[0] == '\0') {
    for (; !completing_help && builtin_words[b]; b++)
      if (strncmp(builtin_words[b], text, tl) == 0)
        return strdup(builtin_words[b++]);
    for (; i < p->doc.n; i++)
      if (strncmp(p->doc.actions[i].name, text, tl) == 0)
        return strdup(p->doc.actions[i++].name);
    return NULL;
  }
  const struct action_doc *a = service_doc_find(&p->doc, completion_action);
  for (; a && i < a->nparams; i++) {
    const struct param_doc *d = &a->params[i];
    if (strncmp(d->name, text, tl) != 0)
      continue;
    size_t n = strlen(d->name);
    char *s = malloc(n + 3);
    if (s)
      snprintf(s, n + 3, "%s%s", d->name, strcmp(d->type, "string") == 0 ? "=" : ":=");
    i++;
    return s;
  }
  return NULL;
}

static char **complete(const char *text, int start, int end) {
  (void)end;
  rl_attempted_completion_over = 1; /* never file names */
  completion_action[0] = '\0';
  completing_help = 0;
  const char *l = rl_line_buffer;
  while (*l == ' ')
    l++;
  size_t wl = strcspn(l, " ");
  if (start > (int)(l - rl_line_buffer)) { /* not the first word */
    if (wl == 4 && strncmp(l, "help", 4) == 0) {
      completing_help = 1;
    } else {
      if (strchr(text, '=') != NULL || wl >= sizeof completion_action)
        return NULL;
      memcpy(completion_action, l, wl);
      completion_action[wl] = '\0';
      rl_completion_append_character = '\0'; /* key= and key:= go on with the value */
    }
  } else {
    rl_completion_append_character = ' ';
  }
  return rl_completion_matches(text, complete_next);
}

static void on_line(char *line) {
  struct prompt *p = the_prompt;
  if (line == NULL) { /* Ctrl-D */
    p->quit = 1;
    putchar('\n');
    rl_callback_handler_remove();
    return;
  }
  rl_callback_handler_remove(); /* no prompt, and nothing read, while the answer is awaited */
  appmsg_loop_modify(p->loop, 0, 0);
  if (*line && strspn(line, " \t") < strlen(line)) {
    add_history(line);
    if (p->history)
      write_history(p->history);
  }
  size_t before = p->sent;
  handle_line(p, line, 0);
  free(line);
  if (p->quit)
    return;
  if (p->sent == before || p->finished == p->sent)
    show_prompt(p);
}

static void on_key(struct appmsg_loop *loop, appmsg_socket_t fd, unsigned events, void *ud) {
  (void)loop;
  (void)fd;
  (void)ud;
  struct prompt *p = the_prompt;
  if (p->finished < p->sent && p->sent > p->skip_upto) {
    if (events & (APPMSG_EV_HUP | APPMSG_EV_ERROR)) /* the terminal went away */
      p->quit = 1;
  } else {
    rl_callback_read_char();
  }
  if (p->quit)
    appmsg_loop_stop(p->loop);
}

static int run_edit(struct prompt *p) {
  p->history = history_path();
  rl_readline_name = "appmsg";
  rl_catch_signals = 0; /* Ctrl-C is the loop's (below): libedit's handler would end the program */
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t";
  rl_completer_word_break_characters = (char *)" \t";
  using_history();
  stifle_history(HISTORY_MAX);
  if (p->history)
    read_history(p->history);
  /* The description, for completion and help: asked for at once, awaited for a moment. */
  send_call(p, CALL_QUIET_DESCRIBE, 0, "describe", NULL, 0, 1);
  while (p->finished < p->sent && appmsg_loop_run_once(p->loop, -1) >= 0)
    ;
  if (p->lost)
    logf_("cannot reach %s yet: requests will try again (set APPMSG_ADDR or give HOST:PORT)",
          p->t.where);
  p->one_by_one = 1;
  int rc = appmsg_loop_watch(p->loop, 0, APPMSG_EV_READ, on_key, NULL);
  rl_callback_handler_install(p->prompt_text, on_line);
  int sigs[] = {SIGINT};
  appmsg_loop_stop_on_signals(p->loop, sigs, 1);
  while (rc == 0 && !p->quit) {
    rc = appmsg_loop_run(p->loop);
    if (rc == 0 && !p->quit) { /* Ctrl-C: a new line, or the answers awaited dropped */
      if (p->finished < p->sent && p->sent > p->skip_upto) {
        p->skip_upto = p->sent; /* (their callbacks still come, and show nothing) */
        printf("\n(interrupted: the answer will not be shown)\n");
      } else {
        rl_replace_line("", 0);
        rl_callback_handler_remove();
        printf("^C\n");
      }
      show_prompt(p);
    }
  }
  appmsg_loop_stop_on_signals(p->loop, NULL, 0);
  appmsg_loop_unwatch(p->loop, 0);
  rl_callback_handler_remove();
  if (p->history) {
    write_history(p->history);
    history_truncate_file(p->history, HISTORY_MAX);
  }
  free(p->history);
  return p->status;
}

#endif

int cmd_prompt(int argc, char **argv) {
  struct conn_args ca = {.timeout_s = 10};
  struct prompt p = {0};
  const struct opt opts[] = {
      {"--json", 0, OPT_FLAG, &p.json, NULL, "print each reply's content as one line of JSON", 0,
       0},
      CONN_OPTS(ca, "give up on an answer after SECONDS (default 10)"),
      {NULL, 0, 0, NULL, NULL, NULL, 0, 0},
  };
  const struct cli cli = {
      .command = "prompt",
      .usage = "[options] [HOST:PORT]",
      .about = "Reads requests, one a line: ACTION [key=TEXT ...] [key:=JSON ...], as appmsg\n"
               "call takes them; help [ACTION] shows the actions (from describe); quit.\n"
               "On a terminal: line editing, history (in $XDG_STATE_HOME/appmsg/history, else\n"
               "~/.appmsg_history; the last 1000 lines) and tab completion of actions and\n"
               "of their parameters (libedit; on Windows lines are read without editing).\n"
               "From a pipe or a file: each line is sent at once, without waiting for the\n"
               "answers before it, and the answers are printed in order.",
      .operands = "HOST:PORT  the server (default $APPMSG_ADDR, else 127.0.0.1:65432)",
      .exits = "0  every request was answered (on a terminal: the last one)\n"
               "1  a connection failed, was closed, or timed out\n"
               "2  usage error (a line that is not a request, too)\n"
               "3  an error reply came",
      .opts = opts,
  };
  const char *pos[2];
  int npos;
  parse_target(&cli, argc, argv, pos, 1, &p.t, &npos);
  client_opts_setup(&cli, &ca, &p.o);
  /* Lines from a pipe come faster than answers: calls wait in the queue, a bounded number in
   * flight (as app-client's), and reading stops while the queue is full. */
  p.o.max_in_flight = 4096;
  p.color = use_color();
  p.lost = 1; /* connect with the first request */
  snprintf(p.prompt_text, sizeof p.prompt_text, "%s> ", p.t.where);
  the_prompt = &p;
  int rc = appmsg_loop_new(&p.loop, APPMSG_LOOP_DEFAULT);
  if (rc) {
    logf_("cannot start: %s", appmsg_strerror(rc));
    return EXIT_CONN;
  }
  int tty = is_terminal(0) && is_terminal(1);
#ifdef APPMSG_HAVE_LIBEDIT
  if (tty) {
    p.interactive = 1;
    rc = run_edit(&p);
  } else {
    rc = run_plain(&p);
  }
#else
  p.one_by_one = tty;
  rc = run_plain(&p);
#endif
  appmsg_client_free(p.client);
  appmsg_loop_free(p.loop);
  service_doc_free(&p.doc);
  appmsg_tls_free(p.o.conn.tls);
  return rc;
}
