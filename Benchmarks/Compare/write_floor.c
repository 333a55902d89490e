// The floor under any pub/sub server's CPU per delivery on this machine: one write() per
// subscriber per message to N loopback TCP sockets, read by another process (an epoll loop),
// and nothing else. Prints the writer's CPU time per delivered message (nearly all of it the
// kernel's: the program itself only loops over write()).
//
// With SYNC_FILE, each message is first made durable the way a broker must before it acks and
// fans out: written to that file (overwriting a preallocated 4 MiB, so the file never grows)
// and fdatasync'ed. That is the floor of a server that syncs each event and writes each
// notification to its own socket.
//
// Messages are due at RATE per second; when the writer falls behind (a sync took long), it takes
// up every message due at once, in one sync and one write per subscriber.
//
// It also prints the latency floor: from the moment each message was sent (its due time, or
// when the writer woke for it, as pubsub_bench.c's publisher stamps its send after its sleep)
// until the reader has all of its bytes, p50/p99/p99.9 over every delivery; a broker's publish →
// notify adds the publisher's hop and its own work to that. And how much of the machine's CPU
// time the hypervisor stole meanwhile (/proc/stat): a run with much stolen time is not
// comparable with a quiet one. The last line, `RESULT`, has the fields of pubsub_bench.c's
// (LABEL, default "floor" or "floor-durable"; no memory figure), for peers.sh.
//
//   cc -O2 -o write_floor write_floor.c
//   [DURATION=5] [LABEL=…] ./write_floor SUBSCRIBERS RATE MESSAGE_BYTES [MESSAGES_PER_WRITE [SYNC_FILE]]
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static int cmp(const void*a,const void*b){double x=*(const double*)a,y=*(const double*)b;return x<y?-1:x>y;}
// The machine's CPU time so far and the part of it stolen by the hypervisor, in clock ticks.
static void machine_ticks(unsigned long long*total,unsigned long long*steal){
 unsigned long long v[8]={0}; *total=*steal=0; FILE*f=fopen("/proc/stat","r"); if(!f)return;
 if(fscanf(f,"cpu %llu %llu %llu %llu %llu %llu %llu %llu",&v[0],&v[1],&v[2],&v[3],&v[4],&v[5],&v[6],&v[7])==8){for(int i=0;i<8;i++)*total+=v[i];*steal=v[7];}
 fclose(f);}
// What the reader (a child process) found: deliveries and latency percentiles in seconds.
struct found { long count; double p50, p99, p999, max; };
int main(int argc,char**argv){
 if(argc<4){fprintf(stderr,"usage: %s SUBSCRIBERS RATE MESSAGE_BYTES [MESSAGES_PER_WRITE [SYNC_FILE]]\n",argv[0]);return 2;}
 int N=atoi(argv[1]),RATE=atoi(argv[2]),MSG=atoi(argv[3]),PER=argc>4?atoi(argv[4]):1; double DUR=getenv("DURATION")?atof(getenv("DURATION")):5;
 if(N<1||RATE<1||MSG<8||PER<1||DUR<=0){fprintf(stderr,"need SUBSCRIBERS, RATE, MESSAGES_PER_WRITE >= 1, MESSAGE_BYTES >= 8, DURATION > 0\n");return 2;}
 struct found *found=mmap(0,sizeof *found,PROT_READ|PROT_WRITE,MAP_SHARED|MAP_ANONYMOUS,-1,0);
 const long LOG=4<<20, CAP=PER>256?PER:256; int lf=-1; long lo=0;
 if(argc>5&&MSG*CAP>LOG){fprintf(stderr,"MESSAGE_BYTES × max(MESSAGES_PER_WRITE, 256) must fit in the 4 MiB sync file\n");return 2;}
 if(argc>5){ lf=open(argv[5],O_RDWR|O_CREAT|O_TRUNC,0600); if(lf<0){perror(argv[5]);return 2;}
  char *z=calloc(1,LOG); if(write(lf,z,LOG)!=LOG||fsync(lf)){perror("preallocate");return 2;} free(z); }
 int ls=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
 bind(ls,(void*)&a,sizeof a); listen(ls,1024); socklen_t l=sizeof a; getsockname(ls,(void*)&a,&l);
 pid_t pid=fork();
 if(!pid){ int ep=epoll_create1(0); int *fds=malloc(N*sizeof(int));
  for(int i=0;i<N;i++){int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);fds[i]=c;struct epoll_event e={.events=EPOLLIN,.data.u32=i};epoll_ctl(ep,EPOLL_CTL_ADD,c,&e);}
  // Each message starts with the time it was sent (a double); per socket, the offset into the
  // current message and the header bytes read so far.
  long *at=calloc(N,sizeof(long)); unsigned char (*hd)[8]=calloc(N,8);
  long cap=(long)(N*(double)RATE*(DUR+2))+1024, nl=0; double *lat=malloc(cap*sizeof(double));
  char buf[65536]; long total=0; double end=now()+DUR+2; struct epoll_event ev[256];
  while(now()<end){int n=epoll_wait(ep,ev,256,200);for(int i=0;i<n;i++){int k=ev[i].data.u32;long r=read(fds[k],buf,sizeof buf);if(r<=0)continue;total+=r;double t=now();
   for(long j=0;j<r;){ if(at[k]<8){hd[k][at[k]++]=buf[j++];continue;}
    long take=MSG-at[k]; if(take>r-j)take=r-j; j+=take; at[k]+=take;
    if(at[k]==MSG){double sent;memcpy(&sent,hd[k],8);if(nl<cap)lat[nl++]=t-sent;at[k]=0;}}}}
  struct rusage ru; getrusage(RUSAGE_SELF,&ru);
  fprintf(stderr,"reader got %ld bytes, reader cpu %.2fs\n",total,ru.ru_utime.tv_sec+ru.ru_utime.tv_usec*1e-6+ru.ru_stime.tv_sec+ru.ru_stime.tv_usec*1e-6);
  if(nl){qsort(lat,nl,sizeof(double),cmp);*found=(struct found){nl,lat[nl/2],lat[nl*99/100],lat[nl*999/1000],lat[nl-1]};}
  _exit(0);}
 int *ss=malloc(N*sizeof(int)); for(int i=0;i<N;i++){ss[i]=accept(ls,0,0);int one=1;setsockopt(ss[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);}
 usleep(300000); char *m=malloc(MSG*CAP); memset(m,'x',MSG*CAP);
 struct rusage r0,r1; getrusage(RUSAGE_SELF,&r0); unsigned long long ticks0,steal0,ticks1,steal1; machine_ticks(&ticks0,&steal0);
 // Message i is due at t0 + i/RATE. Each turn takes up every message due by now (at least PER,
 // at most CAP): one sync for all of them, one write of all of them per subscriber — a group
 // commit and a coalesced write, as a broker that has fallen behind does.
 double t0=now(); long n=0, sent=0, total=(long)(DUR*RATE);
 while(sent<total){
  // A message due while the writer slept is sent when it wakes, as a publisher's would be (it
  // stamps its send after its own sleep); one due while it was busy waited for it since due.
  double d=t0+(double)sent/RATE-now(), woke=0; if(d>0){usleep(d*1e6); woke=now();}
  long due=(long)((now()-t0)*RATE)+1-sent, k=due<PER?PER:due>CAP?CAP:due; if(k>total-sent)k=total-sent;
  for(long p=0;p<k;p++){double at=t0+(double)(sent+p)/RATE; if(at<woke)at=woke; memcpy(m+p*MSG,&at,8);}
  if(lf>=0){ if(lo+MSG*k>LOG)lo=0; pwrite(lf,m,MSG*k,lo); lo+=MSG*k; fdatasync(lf); }
  for(int i=0;i<N;i++){write(ss[i],m,MSG*k); n+=k;} sent+=k;}
 getrusage(RUSAGE_SELF,&r1); machine_ticks(&ticks1,&steal1);
 double stolen=ticks1>ticks0?100.0*(steal1-steal0)/(ticks1-ticks0):0;
 double st=(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)*1e-6;
 double ut=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)*1e-6;
 printf("N=%d rate=%d msg=%d per-write=%d%s: deliveries %ld, writer CPU %.2f us/delivery (user+system; this VM's tick accounting splits them unreliably)\n",N,RATE,MSG,PER,lf>=0?", one fdatasync per turn":"",n,(st+ut)/n*1e6); fflush(stdout);
 wait(0); if(lf>=0){close(lf); unlink(argv[5]);}
 printf("latency from sent to received, %ld deliveries: p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",found->count,found->p50*1e3,found->p99*1e3,found->p999*1e3,found->max*1e3);
 printf("machine: %.1f%% of the CPU time was stolen by the hypervisor\n",stolen);
 const char*label=getenv("LABEL")?getenv("LABEL"):lf>=0?"floor-durable":"floor";
 printf("RESULT %s %d %d %.2f %.3f %.3f - %ld %ld %.1f\n",label,N,RATE,n?(st+ut)/n*1e6:0,found->p50*1e3,found->p99*1e3,found->count,(long)N*total,stolen);}
